"""A model's Triton configuration (the ModelConfig of Triton's model_config.proto), built once as a dict in
protobuf's JSON form and rendered two ways: as `config.pbtxt` for `export --format triton`, and as the JSON that
`cnnkit serve` answers at `GET /v2/models/<name>/config` (what perf_analyzer and tritonclient ask for). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnkit import contract
from cnnkit.errors import CnnkitError
from cnnkit.spec import TRITON_INSTANCE_KINDS

INSTANCE_KINDS = {kind: f"KIND_{kind.upper()}" for kind in TRITON_INSTANCE_KINDS}  # Triton's names
LABELS = "labels.txt"
ENUM_FIELDS = ("data_type", "format", "kind")  # written bare in text format
INT64_FIELDS = ("dims", "max_queue_delay_microseconds")  # strings in protobuf's JSON, numbers in text format


@dataclass(frozen=True, kw_only=True)
class TritonOptions:
    model_name: str | None = None  # default: the model's serving name (contract.ModelInfo.serving_name)
    max_batch_size: int = 256
    preferred_batch_sizes: tuple[int, ...] = (16, 64)
    max_queue_delay_us: int = 2000
    instance_kind: str = "auto"  # auto (GPU where Triton has one), gpu, cpu
    instances: int = 1
    torchscript: bool = False  # also a pytorch_libtorch model beside the ONNX one

    def __post_init__(self) -> None:
        if self.instance_kind not in INSTANCE_KINDS:
            raise CnnkitError(f"instance kind {self.instance_kind!r}; expected one of {', '.join(INSTANCE_KINDS)}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise CnnkitError(f"preferred batch sizes {bad} are not within 1..max batch size {self.max_batch_size}")
        if self.model_name is not None:
            contract.valid_model_name(self.model_name)


def model_config(
    name: str, platform: str, info: contract.ModelInfo, opts: TritonOptions, output_name: str
) -> dict[str, Any]:
    """The configuration as protobuf's JSON mapping has it (int64 fields as strings, enums by name)."""
    batching: dict[str, Any] = {"max_queue_delay_microseconds": str(opts.max_queue_delay_us)}
    if opts.preferred_batch_sizes:
        batching = {"preferred_batch_size": list(opts.preferred_batch_sizes), **batching}
    return {
        "name": name,
        "platform": platform,
        "max_batch_size": opts.max_batch_size,
        "input": [
            {
                "name": info.input_name,
                "data_type": "TYPE_UINT8",
                "format": "FORMAT_NCHW",
                "dims": [str(d) for d in info.geometry.shape],
            }
        ],
        "output": [
            {"name": output_name, "data_type": "TYPE_FP32", "dims": [str(info.num_classes)], "label_filename": LABELS}
        ],
        "dynamic_batching": batching,
        "instance_group": [{"count": opts.instances, "kind": INSTANCE_KINDS[opts.instance_kind]}],
        "version_policy": {"latest": {"num_versions": 1}},
    }


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and key not in ENUM_FIELDS and key not in INT64_FIELDS:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)  # numbers, int64-as-string, enum names


def to_pbtxt(config: dict[str, Any], indent: str = "") -> str:
    """`config` (the dict of `model_config`) in protobuf text format."""
    lines = []
    for key, value in config.items():
        if isinstance(value, dict):
            lines += [f"{indent}{key} {{", to_pbtxt(value, indent + "  ").rstrip("\n"), f"{indent}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            blocks = [f"{indent}  {{\n{to_pbtxt(v, indent + '    ').rstrip()}\n{indent}  }}" for v in value]
            lines += [f"{indent}{key} [", ",\n".join(blocks), f"{indent}]"]
        elif isinstance(value, list):
            lines.append(f"{indent}{key}: [ {', '.join(_scalar(key, v) for v in value)} ]")
        else:
            lines.append(f"{indent}{key}: {_scalar(key, value)}")
    return "\n".join(lines) + "\n"
