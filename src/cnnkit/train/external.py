"""A model trained elsewhere, made a cnnkit checkpoint: the user's network (`--arch`), its state dict (`--weights`),
the pixels it takes, its class names and its normalisation, written as `model.safetensors` + `checkpoint.json` in a
folder of its own, from which export, verify, bench and serve work as for a model cnnkit trained.

The weights must fit the network exactly (every tensor by name and shape): nothing is left fresh in a model that is
exported as it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cnnkit.errors import CheckpointError, DataError
from cnnkit.geometry import Geometry
from cnnkit.spec import WEIGHTS_NAME, CheckpointMeta, ModelConfig, normalisation_problem
from cnnkit.train import checkpoint, nets
from cnnkit.train.nets import weights

SOURCE = "external"  # the dataset name a checkpoint made from outside weights records: there is no data to load


@dataclass(frozen=True, kw_only=True)
class External:
    """What `make` is given: the network, its weights and what it takes."""

    arch: str
    weights: str  # a state dict file, or "torchvision" (train.nets.weights.locate)
    geometry: Geometry
    classes: tuple[str, ...]
    mean: tuple[float, ...] = (0.0,)  # per channel, on the [0, 1] scale; one number means every channel
    std: tuple[float, ...] = (1.0,)


def make(spec: External, out: Path) -> Path:
    """Write the checkpoint into `out` (made if missing); return its weights path. DataError/CheckpointError name
    what does not fit; nothing is written then."""
    g = spec.geometry
    if g.height != g.width:
        raise DataError(f"--input {g.channels}x{g.height}x{g.width}: cnnkit's networks take square inputs")
    mean, std = (tuple(v * g.channels if len(v) == 1 else v) for v in (spec.mean, spec.std))
    problem = normalisation_problem(mean, std, g.channels)
    if problem:
        raise DataError(f"--mean/--std: {problem}")
    if (out / WEIGHTS_NAME).exists():
        raise CheckpointError(f"{out}: already holds a checkpoint; export it as it is (cnnkit export {out}) or "
                              "choose another --out")  # fmt: skip
    config = ModelConfig.from_dict(
        {"arch": spec.arch, "in_channels": g.channels, "num_classes": len(spec.classes), "image_size": g.height}
    )
    net = nets.build(config)
    path = weights.locate(spec.weights, spec.arch)
    fitted = weights.fit(net, weights.read(path), source=path.name, strict=True)
    meta = CheckpointMeta(
        config=config,
        mean=mean,
        std=std,
        classes=spec.classes,
        geometry=g,
        dataset={
            "name": SOURCE,
            "source": path.name,
            "train_size": 0,
            "test_size": 0,
            "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        },  # fmt: skip
        versions=checkpoint.versions(),
        train_args={"arch": spec.arch, "weights": path.name, "weights_fitted": fitted.to_dict()},
    )
    out.mkdir(parents=True, exist_ok=True)
    return checkpoint.save(out, net.state_dict(), meta)
