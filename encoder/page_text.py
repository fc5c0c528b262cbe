"""One decoded page's tokens -> its markdown, grounding regions and JSON, as every runner writes them
(``tilepass-cli``, and ``tilepass-batch``'s Ray actors): the token stream through the tokenizer's UTF-8-safe
stream decoder and the grounding parser, PaddleOCR-VL's OTSL tables made markdown / HTML unless raw, then the
page's JSON (grounding.page_json with the token counts, timings and stop reason)."""

from __future__ import annotations

from typing import Any

from .grounding import GroundingParser, Region, page_json


class PageText:
    """``push(token)`` as the page is decoded (returns the clean text now certain, for streaming);
    ``finish()`` once it stops (returns the rest); then ``text`` and ``regions``."""

    def __init__(self, tokenizer: Any, image_link: str, raw: bool, table_markup: bool = False) -> None:
        self.parser = GroundingParser(image_link=image_link, raw=raw)
        self.stream = tokenizer.stream()
        self.raw = raw
        self.table_markup = table_markup
        self.pieces: list[str] = []
        self.text = ""

    def push(self, tok: int) -> str:
        s = self.parser.feed(self.stream.push(tok))
        if s:
            self.pieces.append(s)
        return s

    def finish(self) -> str:
        tail = self.parser.feed(self.stream.flush()) + self.parser.finish()
        if tail:
            self.pieces.append(tail)
        text = "".join(self.pieces)
        if self.table_markup and not self.raw:  # PaddleOCR-VL's OTSL tables as markdown / HTML
            from .otsl import convert_tables

            text = convert_tables(text)
        self.text = text
        return tail

    @property
    def regions(self) -> list[Region]:
        return self.parser.regions


def result_json(text: str, res: Any, regions: list[Region], name: str, encode_s: float,
                token_ids: bool) -> dict[str, Any]:
    """A page's JSON from its text and its pipeline.PageResult (token_ids: the generated ids too, as the CLI's
    --json gives them; the document files leave them out). encode_s: its vision pass's time."""
    w, h = res.original_size
    ids = {"token_ids": res.tokens} if token_ids else {}
    return page_json(text, res.text, regions, w, h, image=name, mode=res.mode, complete=res.complete,
                     stop_reason=res.stop_reason,
                     tokens={"prompt": res.n_prompt, "image": res.n_image_tokens, "generated": len(res.tokens)},
                     **ids,
                     timings_ms={"encode_batch": round(encode_s * 1e3, 1), "prefill": round(res.prefill_ms, 1),
                                 "decode": round(res.decode_ms, 1)},
                     tokens_per_s={"prefill": round(res.prefill_tps, 2), "decode": round(res.decode_tps, 2)})


__all__ = ["PageText", "result_json"]
