"""The exact-arithmetic baseline for quantised text files: transformers' model holding the weights of a GGUF
file dequantised with gguf.quants (an implementation independent of ours), computing in float32. What a
quantised file loses against the F32 model is then split into the weights' rounding (this baseline) and
our arithmetic (ours against this baseline)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np


def dequantised_text_model(model, path: Path):
    """A deep copy of `model` (UnlimitedOcrForConditionalGeneration) with the text decoder's weights taken
    from the text GGUF at `path`, dequantised; the vision tower is left as it is."""
    import gguf
    import torch
    from gguf import quants as gq

    T = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        T[t.name] = gq.dequantize(t.data, t.tensor_type).astype(np.float32).reshape([int(x) for x in reversed(t.shape)])
    p = "model.language_model."
    sd = {p + "embed_tokens.weight": T["token_embd.weight"], p + "norm.weight": T["output_norm.weight"],
          "lm_head.weight": T["output.weight"]}
    layer = 0
    while f"blk.{layer}.attn_norm.weight" in T:
        b, q = f"blk.{layer}.", f"{p}layers.{layer}."
        sd[q + "input_layernorm.weight"] = T[b + "attn_norm.weight"]
        sd[q + "post_attention_layernorm.weight"] = T[b + "ffn_norm.weight"]
        for a, h in [("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj"), ("attn_output", "o_proj")]:
            sd[q + f"self_attn.{h}.weight"] = T[b + a + ".weight"]
        if b + "ffn_gate_inp.weight" in T:
            sd[q + "mlp.gate.weight"] = T[b + "ffn_gate_inp.weight"]
            sd[q + "mlp.experts.gate_up_proj"] = np.concatenate([T[b + "ffn_gate_exps.weight"],
                                                                 T[b + "ffn_up_exps.weight"]], 1)
            sd[q + "mlp.experts.down_proj"] = T[b + "ffn_down_exps.weight"]
            for a in ("gate", "up", "down"):
                sd[q + f"mlp.shared_experts.{a}_proj.weight"] = T[b + f"ffn_{a}_shexp.weight"]
        else:
            for a in ("gate", "up", "down"):
                sd[q + f"mlp.{a}_proj.weight"] = T[b + f"ffn_{a}.weight"]
        layer += 1
    out = copy.deepcopy(model)
    missing, unexpected = out.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()},
                                              strict=False)
    if unexpected or [k for k in missing if "language_model" in k or "lm_head" in k]:
        raise AssertionError(f"dequantised weights do not fit the model: unexpected {unexpected}, missing {missing}")
    return out
