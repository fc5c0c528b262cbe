"""Each model family's prompt conventions: which text model goes with its vision model, the default prompt and
tasks, and how a page's image tokens and the user's text become the decoder's input ids (and, for the M-RoPE
text models, their 3-D positions).

- DeepSeek-OCR and DeepSeek-OCR-2 (``deepseek_ocr``, ``deepseek_ocr2``): ``[bos] + tokens(text before <image>)
  + [image] * n + tokens(text after <image>)``; ``<image>\\n`` is put in front of a prompt that has none; each
  part is tokenised on its own, as the reference processor does. Positions are 0 .. L-1.
- DeepSeek-VL2 (``deepseek_vl2``): ``[bos] + tokens("<|User|>: " + text before <image>) + [image] * n +
  tokens(text after <image> + "\\n\\n<|Assistant|>:")``, the question getting ``<image>\\n`` in front when it has none.
- PaddleOCR-VL (``paddleocr_vl``): the chat template stored in the text GGUF is rendered (never a hard-coded
  string: third-party copies of it disagree on the ending) for one user message ``[image, text]`` with the
  generation prompt; its single ``<|IMAGE_PLACEHOLDER|>`` becomes the page's n image tokens. Positions follow
  transformers' ``get_rope_index``: text tokens (p, p, p); the image tokens of a rows x cols merged grid that
  starts at position s get (s, s + row, s + col); the text after it continues at s + max(rows, cols).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

IMAGE_TAG = "<image>"


class PromptError(ValueError):
    """A prompt that the model's conventions cannot take."""


class TokenizerLike(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def token_id(self, text: str) -> int | None: ...


@dataclass(frozen=True)
class Prompt:
    """The decoder's input: ids and, for M-RoPE models, positions [3, len(ids)] (else None)."""

    ids: list[int]
    positions: np.ndarray | None = None


class Conventions(Protocol):
    family: str
    text_architectures: tuple[str, ...]
    default_prompt: str
    tasks: dict[str, str] | None
    table_markup: bool  # its output writes tables in OTSL markup (otsl.py turns them into markdown / HTML)

    def build(self, tok: TokenizerLike, prompt: str, n_image_tokens: int, grid: tuple[int, int]) -> Prompt: ...


def normalise_deepseek_prompt(prompt: str) -> str:
    """``<image>\\n`` put in front when the prompt has no ``<image>``; more than one is refused."""
    n = prompt.count(IMAGE_TAG)
    if n == 0:
        return IMAGE_TAG + "\n" + prompt
    if n > 1:
        raise PromptError(f"the prompt holds {n} {IMAGE_TAG} tags; one page takes exactly one image")
    return prompt


@dataclass(frozen=True)
class DeepseekConventions:
    family: str
    bos_id: int | None
    image_id: int
    text_architectures: tuple[str, ...] = ("deepseek2-ocr",)
    default_prompt: str = "<|grounding|>Convert the document to markdown."
    tasks: dict[str, str] | None = None
    table_markup: bool = False

    def build(self, tok: TokenizerLike, prompt: str, n_image_tokens: int, grid: tuple[int, int]) -> Prompt:
        before, after = normalise_deepseek_prompt(prompt).split(IMAGE_TAG, 1)
        ids = [] if self.bos_id is None else [self.bos_id]
        ids += tok.encode(before) if before else []
        ids += [self.image_id] * n_image_tokens
        ids += tok.encode(after) if after else []
        return Prompt(ids)


@dataclass(frozen=True)
class DeepseekVl2Conventions:
    """DeepSeek-VL2's "deepseek" conversation for one user turn: ``<|User|>: {question}\\n\\n<|Assistant|>:``
    after BOS, the question getting ``<image>\\n`` in front when it has no ``<image>``; each text piece between
    image tags tokenised on its own."""

    bos_id: int | None
    image_id: int
    family: str = "deepseek_vl2"
    text_architectures: tuple[str, ...] = ("deepseek2-ocr", "deepseek2")
    default_prompt: str = "Convert the document to markdown."
    tasks: dict[str, str] | None = None
    table_markup: bool = False

    def build(self, tok: TokenizerLike, prompt: str, n_image_tokens: int, grid: tuple[int, int]) -> Prompt:
        text = f"<|User|>: {normalise_deepseek_prompt(prompt).strip()}\n\n<|Assistant|>:"
        before, after = text.split(IMAGE_TAG, 1)
        ids = [] if self.bos_id is None else [self.bos_id]
        ids += tok.encode(before) if before else []
        ids += [self.image_id] * n_image_tokens
        ids += tok.encode(after) if after else []
        return Prompt(ids)


PADDLE_TASKS = {"ocr": "OCR:", "table": "Table Recognition:", "formula": "Formula Recognition:",
                "chart": "Chart Recognition:"}


@dataclass(frozen=True)
class PaddleOcrConventions:
    chat_template: str
    image_id: int
    family: str = "paddleocr_vl"
    text_architectures: tuple[str, ...] = ("paddleocr",)
    default_prompt: str = "OCR:"
    tasks: dict[str, str] | None = None
    table_markup: bool = True

    def build(self, tok: TokenizerLike, prompt: str, n_image_tokens: int, grid: tuple[int, int]) -> Prompt:
        from .chat_template import TemplateError, render_chat_template

        if IMAGE_TAG in prompt:
            raise PromptError(f"a PaddleOCR-VL prompt is the task text; the image goes where the chat template "
                              f"puts it (remove {IMAGE_TAG})")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        try:
            text = render_chat_template(self.chat_template, messages, add_generation_prompt=True)
        except TemplateError as e:
            raise PromptError(f"the model's chat template cannot be rendered: {e}") from None
        ids = tok.encode(text)
        where = [i for i, t in enumerate(ids) if t == self.image_id]
        if len(where) != 1:
            raise PromptError(f"the chat template rendered {len(where)} image placeholders for one image")
        at = where[0]
        ids = ids[:at] + [self.image_id] * n_image_tokens + ids[at + 1:]
        return Prompt(ids, mrope_positions(len(ids), at, n_image_tokens, grid))


def mrope_positions(n: int, image_start: int, n_image: int, grid: tuple[int, int]) -> np.ndarray:
    """[3, n] positions (t, h, w) of a prompt with one image block of a cols x rows merged grid at
    image_start, as transformers' get_rope_index gives them."""
    cols, rows = grid
    if cols * rows != n_image:
        raise PromptError(f"{n_image} image tokens for a {cols}x{rows} grid")
    pos = np.empty((3, n), dtype=np.int32)
    pos[:, :image_start] = np.arange(image_start)
    s = image_start
    r, c = np.divmod(np.arange(n_image), cols)
    pos[0, s:s + n_image] = s
    pos[1, s:s + n_image] = s + r
    pos[2, s:s + n_image] = s + c
    after = s + max(rows, cols)
    tail = n - (s + n_image)
    pos[:, s + n_image:] = after + np.arange(tail)
    return pos


def conventions_for(family: str, tok: TokenizerLike, *, bos_id: int | None, image_id: int | None,
                    chat_template: str | None) -> Conventions:
    """The conventions of a vision family, given the text model's tokenizer and ids."""
    if family in ("deepseek_ocr", "deepseek_ocr2"):
        if image_id is None:
            raise PromptError(f"the vocabulary has no {IMAGE_TAG} token")
        return DeepseekConventions(family=family, bos_id=bos_id, image_id=image_id)
    if family == "deepseek_vl2":
        if image_id is None:
            raise PromptError(f"the vocabulary has no {IMAGE_TAG} token")
        return DeepseekVl2Conventions(bos_id=bos_id, image_id=image_id)
    if family == "paddleocr_vl":
        if not chat_template:
            raise PromptError("the text model stores no chat template (tokenizer.chat_template)")
        placeholder = tok.token_id("<|IMAGE_PLACEHOLDER|>") if image_id is None else image_id
        if placeholder is None:
            raise PromptError("the vocabulary has no <|IMAGE_PLACEHOLDER|> token")
        return PaddleOcrConventions(chat_template=chat_template, image_id=placeholder, tasks=dict(PADDLE_TASKS))
    raise PromptError(f"no prompt conventions for the model family {family!r}")


def check_pair(conv: Conventions, text_architecture: str | None, vision_path: str, text_path: str) -> None:
    """A clear error when the text model is not the vision family's."""
    if text_architecture is not None and text_architecture not in conv.text_architectures:
        raise PromptError(f"{text_path}: a {text_architecture!r} text model does not go with the {conv.family} vision "
                          f"model {vision_path} (it needs {' or '.join(conv.text_architectures)})")


__all__ = ["Conventions", "DeepseekConventions", "DeepseekVl2Conventions", "IMAGE_TAG", "PADDLE_TASKS", "PaddleOcrConventions", "Prompt",
           "PromptError", "check_pair", "conventions_for", "mrope_positions", "normalise_deepseek_prompt"]
