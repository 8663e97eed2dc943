"""`cnnkit predict`: image files through the runtime, per-file errors that don't stop the others."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnkit.errors import CnnkitError

if TYPE_CHECKING:
    from cnnkit.runtime.classifier import Classifier
from cnnkit.runtime import images
from cnnkit.runtime.predictions import predictions


@dataclass(frozen=True, kw_only=True)
class FilePrediction:
    file: str
    label: str | None = None
    index: int | None = None
    probability: float | None = None
    top_k: list[dict[str, Any]] = field(default_factory=list)
    inverted: bool = False
    error: str | None = None
    warning: str | None = None  # e.g. the file decodes to a blank image


@dataclass(frozen=True, kw_only=True)
class PredictReport:
    model: str
    providers: list[str]
    model_version: str
    results: list[FilePrediction]
    engine: str = "onnxruntime"
    precision: str = "fp32"  # the float precision the engine computed in

    @property
    def failed(self) -> int:
        return sum(r.error is not None for r in self.results)


def predict_files(clf: Classifier, paths: list[str], top_k: int = 1, invert: bool | None = None) -> PredictReport:
    """Decode every file (collecting per-file errors), then classify the good ones in one batch."""
    decoded, results = {}, {}
    for p in paths:
        try:
            decoded[p] = images.load(p, clf.info.geometry, invert)
        except CnnkitError as exc:
            results[p] = FilePrediction(file=p, error=str(exc))
    if decoded:
        batch = np.stack([d.pixels for d in decoded.values()])
        probs = clf.probabilities(batch)
        finite = np.isfinite(probs).all(axis=1)
        for (p, d), pred, ok in zip(decoded.items(), predictions(probs, clf.info.classes, top_k), finite):
            if not ok:
                results[p] = FilePrediction(file=p, error=f"{p}: the model's output for this image is not finite (NaN)")
                continue
            results[p] = FilePrediction(
                file=p,
                label=pred.label,
                index=pred.index,
                probability=pred.probability,
                top_k=pred.to_dict()["top_k"],
                inverted=d.inverted,
                warning=d.warning,
            )
    return PredictReport(
        model=clf.source,
        providers=clf.providers,
        model_version=clf.info.version,
        results=[results[p] for p in paths],
        engine=clf.engine,
        precision=clf.precision,
    )
