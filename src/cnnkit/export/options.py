"""`ExportOptions`: what `cnnkit export` writes and how it is judged, and which formats a request means. Light
(numpy at most): the CLI reads its defaults from here."""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnkit.errors import CnnkitError, option_error
from cnnkit.export.compare import Gate
from cnnkit.spec import ALL_FORMATS, EXPORT_FORMATS, EXPORT_PRECISIONS, QUANTIZERS

FORMAT_CHOICES = (*EXPORT_FORMATS, "all", "triton")  # what `export --format` takes


def formats_for(request: str, precision: str = "fp32") -> tuple[str, ...]:
    """The file formats a format request means: one format, or for "all" every format but the AOTInductor package
    (asked for by name: it compiles for a minute), and for "triton" ONNX and TorchScript (a Triton repository holds
    the ONNX file and, if asked, the TorchScript one); a reduced-precision "all" is ONNX only, since reduced
    precision is an ONNX variant and the torch formats stay fp32."""
    if request not in FORMAT_CHOICES:
        raise option_error(CnnkitError, "format", request, f"expected one of {', '.join(FORMAT_CHOICES)}")
    if request in EXPORT_FORMATS:
        return (request,)
    if precision != "fp32" and request in ("all", "triton"):  # a Triton repository's INT8/fp16 model is ONNX
        return ("onnx",)
    return ALL_FORMATS if request == "all" else ("onnx", "torchscript")


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """What to export and how it is judged (built once from the CLI)."""

    formats: tuple[str, ...] = ("onnx", "torchscript")
    precision: str = "fp32"  # fp32 | int8 | fp16 (ONNX only)
    fold: bool = True  # fc1 and fc2 folded into one exact linear layer; False mirrors the training module
    opset: int | None = None  # default: the exporter's
    verify: bool = True  # files land only when they pass `gate`
    calibration_images: int = 512  # INT8: training images to calibrate on
    calibration_seed: int = 0
    quantizer: str = "onnxruntime"  # INT8: ONNX Runtime's quantizer with cnnkit's recipe, or "nncf" (its extra)
    gate: Gate = field(default_factory=Gate)

    def __post_init__(self) -> None:
        if self.precision not in EXPORT_PRECISIONS:
            raise CnnkitError(f"unknown precision {self.precision!r}; expected one of {', '.join(EXPORT_PRECISIONS)}")
        unknown = [f for f in self.formats if f not in EXPORT_FORMATS]
        if unknown or not self.formats:
            raise CnnkitError(f"formats {list(self.formats)}: expected some of {', '.join(EXPORT_FORMATS)}")
        if self.precision != "fp32" and set(self.formats) - {"onnx"}:
            raise option_error(
                CnnkitError, "precision", self.precision, "applies to ONNX only (the torch formats stay fp32)"
            )
        if self.quantizer not in QUANTIZERS:
            raise option_error(CnnkitError, "quantizer", self.quantizer, f"expected one of {', '.join(QUANTIZERS)}")
        if self.quantizer != "onnxruntime" and self.precision != "int8":
            raise option_error(CnnkitError, "quantizer", self.quantizer, "applies to --precision int8 only")
        if self.calibration_images < 1:
            raise CnnkitError(f"calibration needs at least 1 image, got {self.calibration_images}")
        if self.opset is not None and self.opset < 18:
            raise option_error(CnnkitError, "opset", self.opset, "the dynamo exporter writes opset 18 or later")
