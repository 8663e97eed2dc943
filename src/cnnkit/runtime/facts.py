"""What an engine says of a loaded model (metadata, input and output tensors), and the one check that it is a cnnkit
model: the same contract whichever engine read the file. Imports numpy-free, engine-free code only."""

from __future__ import annotations

from typing import Any, NamedTuple

from cnnkit import contract
from cnnkit.errors import ModelFileError


class Tensor(NamedTuple):
    dtype: str  # "uint8", "float32", ... (numpy's names, whichever engine reported it)
    shape: list[Any]  # ints, or None / a name for a dynamic dimension


class ModelFacts(NamedTuple):
    metadata: dict[str, str]  # the ONNX file's metadata_props
    inputs: dict[str, Tensor]
    outputs: dict[str, Tensor]


def read_info(facts: ModelFacts, source: str) -> contract.ModelInfo:
    """The model's metadata, checked against its graph; ModelFileError with what does not match."""
    if contract.KEY not in facts.metadata:
        raise ModelFileError(
            f"{source}: not a cnnkit model (no '{contract.KEY}' metadata); export it with `cnnkit export`"
        )
    info = contract.ModelInfo.from_json(facts.metadata[contract.KEY], source)
    inputs, outputs = facts.inputs, facts.outputs
    if info.input_name not in inputs or info.output_name not in outputs:
        raise ModelFileError(
            f"{source}: graph inputs {sorted(inputs)} / outputs {sorted(outputs)} do not "
            f"match the metadata ('{info.input_name}' -> '{info.output_name}')"
        )
    image = inputs[info.input_name]
    if image.dtype != "uint8":
        raise ModelFileError(f"{source}: input '{info.input_name}' is {image.dtype}, expected uint8")
    expected = list(info.geometry.shape)
    if len(image.shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(image.shape[1:], expected)):
        raise ModelFileError(
            f"{source}: input '{info.input_name}' has shape {image.shape}, but the metadata says "
            f"[N, {', '.join(map(str, expected))}]"
        )
    out = outputs[info.output_name]
    if out.dtype != "float32" or len(out.shape) != 2:
        raise ModelFileError(
            f"{source}: output '{info.output_name}' is {out.dtype} of shape {out.shape}; "
            "expected float32 logits [N, classes]"
        )
    width = out.shape[-1]
    if isinstance(width, int) and width != info.num_classes:
        raise ModelFileError(
            f"{source}: the model has {width} outputs but its metadata names {info.num_classes} classes"
        )
    return info
