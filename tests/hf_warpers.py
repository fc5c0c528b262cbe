"""transformers' sampling warpers as the independent reference of our sampler's filters (temperature, top-k,
top-p) and of the distribution a seeded draw follows."""

from __future__ import annotations

import numpy as np
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper


def hf_filter(logits: np.ndarray, temperature: float, top_k: int, top_p: float, stable: bool = False) -> np.ndarray:
    """transformers' warpers in sampling order; stable: torch.sort made stable inside TopPLogitsWarper (ties in
    ascending id order) instead of torch's unspecified order."""
    x = torch.from_numpy(logits.astype(np.float32))[None]
    ids = torch.zeros(1, 1, dtype=torch.long)
    x = TemperatureLogitsWarper(temperature)(ids, x)
    if top_k > 0:
        x = TopKLogitsWarper(top_k)(ids, x)
    if top_p < 1.0:
        if stable:
            sort = torch.sort
            torch.sort = lambda t, descending=False: sort(t, descending=descending, stable=True)
            try:
                x = TopPLogitsWarper(top_p)(ids, x)
            finally:
                torch.sort = sort
        else:
            x = TopPLogitsWarper(top_p)(ids, x)
    return x[0].numpy()


def hf_probs(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """The distribution sampling draws from: hf_filter, then softmax (float64)."""
    return torch.softmax(torch.from_numpy(hf_filter(logits, temperature, top_k, top_p)).double(), 0).numpy()
