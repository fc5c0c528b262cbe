"""Helpers the op and model tests share."""

import numpy as np


def rel_err(got, ref) -> float:
    """Max-abs error over the reference's max-abs (the suite's "relative" error), in float64."""
    ref = np.asarray(ref, np.float64)
    return float(np.max(np.abs(np.asarray(got, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))
