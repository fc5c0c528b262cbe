"""Train the byte-level BPE on generator text and write tokenizer.json / tokenizer_config.json.

    python examples/ocrtrain/build_tokenizer.py --out examples/model --vocab 3072 --pages 3000
Special tokens get ids 0..14 (BOS 0, EOS 1, pad 2, <image> 3, ...): NOT the published model's ids; a runtime
must read them from these files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BOS, EOS, PAD, PROMPT_FREE, PROMPT_GROUNDING, SPECIALS  # noqa: E402
from gen import make_page  # noqa: E402


def corpus(n_pages: int, seed0: int = 10_000_000):
    for i in range(n_pages):
        p = make_page(seed0 + i, difficulty=(i % 5) / 4)
        yield p.markdown
        yield p.grounding
    yield PROMPT_FREE.replace("<image>", "")
    yield PROMPT_GROUNDING.replace("<image>", "").replace("<|grounding|>", "")


def build(out: Path, vocab: int = 3072, pages: int = 3000):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(pages), trainer=trainer)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    added = {str(tok.token_to_id(s)): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                       "single_word": False, "special": True} for s in SPECIALS}
    cfg = {
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|User|>", "<|Assistant|>"],
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": None,
        "clean_up_tokenization_spaces": False, "legacy": True, "model_max_length": 8192,
        "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, "add_eos_token": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1, ensure_ascii=False) + "\n")
    tm = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "additional_special_tokens": ["<|User|>", "<|Assistant|>"]}
    (out / "special_tokens_map.json").write_text(json.dumps(tm, indent=1, ensure_ascii=False) + "\n")
    return tok


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "model"))
    ap.add_argument("--vocab", type=int, default=3072)
    ap.add_argument("--pages", type=int, default=3000)
    a = ap.parse_args()
    t = build(Path(a.out), a.vocab, a.pages)
    print("vocab", t.get_vocab_size(), {s: t.token_to_id(s) for s in SPECIALS})
