"""The exported model's contract: uint8 `images` [N,C,H,W] in, float32 `logits` [N,classes] out, and the metadata
every export carries (ONNX metadata_props, TorchScript _extra_files).

At the bottom of the house (imports nothing but `cnnkit.errors` and `cnnkit.spec`): the runtime parses it, export builds
it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.errors import DataError, ModelFileError
from cnnkit.geometry import Geometry
from cnnkit.spec import EXPORT_FORMATS, EXPORT_PRECISIONS, QUANTIZERS, class_names_problem, per_channel

if TYPE_CHECKING:
    from cnnkit.spec import CheckpointMeta

FORMAT = "cnnkit-model/1"
KEY = "cnnkit"  # ONNX metadata_props key and TorchScript extra-file name ("cnnkit.json")
TS_EXTRA_FILE = "cnnkit.json"
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"  # the dynamic batch dimension, named the same in the ONNX graph
# in a run folder, beside the checkpoint
FILENAMES = dict(zip(EXPORT_FORMATS, ("model.onnx", "model.ts", "model.pt2", "model.aoti.pt2")))
MANIFEST = "exports.json"  # beside exported files: their SHA-256, recorded by `cnnkit export`
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What an application needs to use an exported model, read from the model file itself."""

    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale (one value in exports before per-channel statistics)
    std: tuple[float, ...]
    geometry: Geometry = Geometry()  # how an image is fitted to the input (exports before it was recorded: stretch)
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    checkpoint_sha256: str | None = None
    checkpoint_path: str | None = None
    precision: str = "fp32"  # of the weights and arithmetic; the input/output contract is the same for all
    folded: bool = False  # fc1 and fc2 folded into one exact linear layer
    quantizer: str | None = None  # INT8: "nncf" where NNCF made the file (absent: ONNX Runtime's, cnnkit's recipe)
    model_version: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.geometry.channels

    @property
    def image_size(self) -> int:
        """The input's width (its height is `geometry.height`; cnnkit's models take square inputs)."""
        return self.geometry.width

    @property
    def version(self) -> str:
        """A short model version, its own for each variant (precision, fold) of a checkpoint.

        Exports before variants existed carry none: the first 12 hex digits of the checkpoint's SHA-256 then.
        """
        return self.model_version or (self.checkpoint_sha256 or "unknown")[:12]

    @property
    def serving_name(self) -> str:
        """The model's name on a server: in Triton's model repository and in every KServe V2 path, by one rule.

        `cnnkit-<dataset>` from the metadata (e.g. `cnnkit-mnist-sample`), reduced to letters, digits, `-` and `_`.
        """
        dataset = str((self.raw.get("dataset") or {}).get("name") or "model")
        return valid_model_name("cnnkit-" + re.sub(r"[^A-Za-z0-9_-]+", "-", dataset).strip("-"), "metadata")

    @property
    def variant(self) -> str:
        """'fp32', 'int8-folded', 'int8-nncf-folded', ...: the precision, the quantizer where it is not cnnkit's own
        recipe, and whether the linear layers are folded."""
        by = f"-{self.quantizer}" if self.quantizer and self.quantizer != "onnxruntime" else ""
        return self.precision + by + ("-folded" if self.folded else "")

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> ModelInfo:
        """Parse and bounds-check the metadata; ModelFileError naming the field on anything else."""
        try:
            d = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ModelFileError(f"{where}: cnnkit metadata is not valid JSON ({str(exc)[:80]})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ModelFileError(f"{where}: metadata format {got!r}, expected {FORMAT!r}")
        try:
            info = cls._from_dict(d, where)
        except (KeyError, IndexError, TypeError, ValueError, OverflowError) as exc:
            raise ModelFileError(f"{where}: incomplete cnnkit metadata (missing {exc})") from None
        usable = all(math.isfinite(m) for m in info.mean) and all(math.isfinite(s) and s > 0 for s in info.std)
        if not usable or len(info.mean) != len(info.std) or len(info.mean) not in (1, info.channels):
            raise ModelFileError(f"{where}: metadata normalisation mean {info.mean}, std {info.std} is not usable")
        return info

    @classmethod
    def _from_dict(cls, d: dict[str, Any], where: str) -> ModelInfo:
        inp, norm, out = _object(d, "input", where), _object(d, "normalization", where), _object(d, "output", where)
        checkpoint = _object(d, "checkpoint", where, optional=True)
        variant = _object(d, "variant", where, optional=True)
        _object(d, "dataset", where, optional=True)  # the serving name is made from it
        shape = inp["shape"]
        if not isinstance(shape, list) or len(shape) != 4 or not all(_is_int(v) for v in shape[1:]):
            raise ModelFileError(f"{where}: metadata input shape {str(shape)[:60]} is not [N, C, H, W]")
        precision = variant.get("precision", "fp32")
        quantizer = variant.get("quantizer")
        if (
            precision not in EXPORT_PRECISIONS
            or not isinstance(variant.get("folded", False), bool)
            or (quantizer is not None and quantizer not in QUANTIZERS)
        ):
            raise ModelFileError(f"{where}: metadata variant {str(variant)[:60]} is not one cnnkit writes")
        geometry = _geometry(shape, _object(inp, "pixels", where, optional=True), where)
        return cls(
            classes=tuple(check_labels(d["classes"], where)),
            mean=_numbers(norm["mean"], "normalization mean", where),
            std=_numbers(norm["std"], "normalization std", where),
            geometry=geometry,
            input_name=_text(inp["name"], "input name", where),
            output_name=_text(out["name"], "output name", where),
            checkpoint_sha256=_text(checkpoint.get("sha256"), "checkpoint sha256", where, optional=True),
            checkpoint_path=_text(checkpoint.get("path"), "checkpoint path", where, optional=True),
            precision=precision,
            folded=bool(variant.get("folded", False)),
            quantizer=quantizer,
            model_version=_text(d.get("model_version"), "model_version", where, optional=True),
            raw=d,
        )


def _object(d: dict[str, Any], key: str, where: str, optional: bool = False) -> dict[str, Any]:
    value = d.get(key) if optional else d[key]
    if optional and value is None:
        return {}
    if not isinstance(value, dict):
        raise ModelFileError(f"{where}: metadata {key} must be an object, got {type(value).__name__}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(value: Any, what: str, where: str) -> tuple[float, ...]:
    """A number (exports before per-channel statistics) or a list of 1-3 numbers (`spec.per_channel`)."""
    try:
        return per_channel(value)
    except ValueError:
        raise ModelFileError(
            f"{where}: metadata {what} must be a number or a list of 1-3, got {str(value)[:40]}"
        ) from None


def _geometry(shape: list[Any], pixels: dict[str, Any], where: str) -> Geometry:
    """The input geometry from the shape [N, C, H, W] and the `pixels` record (absent in older exports: their
    images were stretched to the size and, being one-channel, auto-inverted)."""
    try:
        return Geometry(
            channels=shape[1],
            height=shape[2],
            width=shape[3],
            resize=pixels.get("resize", "stretch"),
            invert=pixels.get("invert", "auto"),
        )
    except DataError as exc:
        raise ModelFileError(f"{where}: metadata input {str(shape)[:60]}: {exc}") from None


def _text(value: Any, what: str, where: str, optional: bool = False) -> Any:
    """A short string (or None, where `optional`)."""
    if (value is None and optional) or (isinstance(value, str) and 0 < len(value) <= 4096):
        return value
    raise ModelFileError(f"{where}: metadata {what} must be a string, got {str(value)[:40]!r}")


def check_labels(classes: Any, where: str) -> list[str]:
    """Class names from metadata, by the one rule (`spec.class_names_problem`), else ModelFileError."""
    if not isinstance(classes, list):
        raise ModelFileError(f"{where}: metadata classes must be a non-empty list")
    problem = class_names_problem(classes)
    if problem:
        raise ModelFileError(f"{where}: metadata {problem}")
    return classes


def valid_model_name(name: str, where: str = "--model-name") -> str:
    """A model name safe as a folder in a Triton repository and a segment of a URL path, else ModelFileError."""
    if not MODEL_NAME_RE.fullmatch(name) or ".." in name:
        raise ModelFileError(
            f"{where}: model name {name!r} must be 1-128 letters, digits, '_', '-' or '.', starting with a letter "
            "or digit"
        )
    return name


def _no_path(source: str) -> str:
    """A dataset source without the build machine's folders ("bundled" stays; /home/me/data/idx -> "idx")."""
    return source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] if "/" in source or "\\" in source else source


def image_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """ONNX's standard metadata for a model whose input is an image (onnx/docs/MetadataProps.md), from cnnkit's."""
    shape = (meta.get("input") or {}).get("shape") or []
    if len(shape) != 4:
        return {}
    channels = shape[1]
    return {
        "Image.BitmapPixelFormat": "Gray8" if channels == 1 else "Rgb8",
        "Image.ColorSpaceGamma": "SRGB",
        "Image.NominalPixelRange": "NominalRange_0_255",
    }


def read_manifest(directory: Path) -> dict[str, Any]:
    """The file entries of `directory`'s exports.json (`MANIFEST`), or {} where it is missing or unreadable."""
    try:
        doc = json.loads((directory / MANIFEST).read_text())
        files = doc.get("files") if isinstance(doc, dict) else None
        return dict(files) if isinstance(files, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return {}


def model_version(checkpoint_sha256: str, variant: dict[str, Any]) -> str:
    """12 hex digits naming one variant of one checkpoint (an INT8 file never shares its fp32 source's version)."""
    text = checkpoint_sha256 + json.dumps(variant, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_metadata(
    ckpt_meta: CheckpointMeta,
    checkpoint_path: str,
    checkpoint_sha256: str,
    versions: dict[str, Any],
    variant: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The metadata dict for an export of the checkpoint described by `ckpt_meta`.

    `variant` records how this file differs from a plain fp32 export: {"precision", "folded", ...}.
    """
    g = ckpt_meta.geometry
    variant = variant or {"precision": "fp32", "folded": False}
    note = "light on dark, as in MNIST" if g.invert == "auto" else "as the training images were"
    return {
        "format": FORMAT,
        "classes": list(ckpt_meta.classes),
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "shape": [BATCH_DIM, *g.shape],
            "layout": "NCHW",
            "range": [0, 255],
            "pixels": {"format": g.pixel_format, "resize": g.resize, "invert": g.invert},
            "note": f"raw {g.pixel_format} pixels, {note}; normalisation is inside the model",
        },
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [BATCH_DIM, len(ckpt_meta.classes)]},
        "normalization": {"mean": list(ckpt_meta.mean), "std": list(ckpt_meta.std), "scale": "x / 255"},
        "model_config": ckpt_meta.config.to_dict(),
        "checkpoint": {"path": checkpoint_path, "sha256": checkpoint_sha256},
        "dataset": {**ckpt_meta.dataset, "source": _no_path(str(ckpt_meta.dataset.get("source", "")))},
        "metrics": ckpt_meta.metrics,
        "versions": versions,
        "variant": variant,
        "model_version": model_version(checkpoint_sha256, variant),
    }
