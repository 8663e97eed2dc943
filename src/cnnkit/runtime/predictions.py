"""Logits to answers: softmax and top-k predictions with class names. numpy only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """One image's result: the top class and the `top_k` (class name, probability) pairs."""

    index: int
    label: str
    probability: float
    top_k: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "label": self.label,
            "probability": self.probability,
            "top_k": [{"label": lb, "probability": p} for lb, p in self.top_k],
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [N, classes] logits (numerically stable)."""
    z: np.ndarray = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def predictions(probs: np.ndarray, classes: Sequence[str], top_k: int = 1) -> list[Prediction]:
    """Probabilities [N, classes] -> one Prediction per row, with the `top_k` most probable classes."""
    k = max(1, min(int(top_k), probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    out = []
    for row, idx in zip(probs, order):
        top = tuple((classes[j], float(row[j])) for j in idx)
        out.append(Prediction(index=int(idx[0]), label=classes[idx[0]], probability=float(row[idx[0]]), top_k=top))
    return out
