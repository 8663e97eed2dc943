"""Torch-free facts both halves of the house name: the model's configuration, the checkpoint's metadata schema,
the one class-name rule, and the choices every command offers (devices, precisions, datasets).

At the bottom of the house (imports only `cnnkit.errors`), so the runtime, serve, evaluate and the CLI can type
what the torch side makes without importing torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cnnkit.errors import CheckpointError, DataError
from cnnkit.geometry import CHANNELS, MAX_SIDE, Geometry

# ------------------------------------------------------------------------------------------ choices

DEVICES = ("auto", "cpu", "cuda")  # --device of train, predict, serve, evaluate; the runtime's `device=`
BENCH_DEVICES = ("cpu", "cuda")  # where a measurement or a parity check runs: never "auto"
TRAIN_PRECISIONS = ("auto", "fp32", "bf16")
CUDA_GRAPH = ("auto", "on", "off")  # train --cuda-graph
EXPORT_PRECISIONS = ("fp32", "int8", "fp16")  # an exported file's weights and arithmetic
QUANTIZERS = ("onnxruntime", "nncf")  # what makes an INT8 file: ONNX Runtime's quantizer (cnnkit's recipe) or NNCF's
EXPORT_FORMATS = ("onnx", "torchscript", "exported", "aoti")  # exported: torch.export .pt2; aoti: AOTInductor package
ALL_FORMATS = EXPORT_FORMATS[:3]  # `--format all`; the AOTInductor package compiles C++ for a minute: asked for
ENGINES = ("onnxruntime", "openvino")  # what runs an exported .onnx file; --engine also takes "auto"
INFERENCE_PRECISIONS = ("fp32", "bf16")  # the float arithmetic an engine runs a file with
TRITON_INSTANCE_KINDS = ("auto", "gpu", "cpu")  # where Triton runs a model's instances (auto: a GPU if it has one)
DATASETS = ("mnist", "fashion-mnist", "sample")

# ------------------------------------------------------------------------------------- class names

MAX_LABEL_CHARS = 64


def class_names_problem(names: Any) -> str | None:
    """What is wrong with a list of class names (the one rule for `--classes`, classes.txt, checkpoints and model
    metadata), or None: a non-empty list of distinct names of 1-64 printable characters."""
    if not isinstance(names, (list, tuple)) or not names:
        return "class names must be a non-empty list"
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            return f"class {i} has an empty name"
        if len(name) > MAX_LABEL_CHARS:
            return f"class {i} name is {len(name)} characters (at most {MAX_LABEL_CHARS})"
        if not name.isprintable():
            return f"class {i} name {name[:40]!r} holds control characters (not printable)"
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        return f"class names repeat: {', '.join(dupes)}"
    return None


# ------------------------------------------------------------------------------------- model config

CONFIG_BOUNDS: dict[str, tuple[float, float]] = {
    "in_channels": (min(CHANNELS), max(CHANNELS)),
    "conv1_channels": (1, 1024),
    "conv2_channels": (1, 1024),
    "kernel_size": (1, 15),
    "hidden": (1, 16384),
    "num_classes": (1, 10000),
    "image_size": (4, MAX_SIDE),
    "dropout": (0.0, 0.99),
}
MAX_PARAMETERS = 256 * 2**20  # 1 GiB of fp32 weights: each field within bounds can still multiply past any memory
SEED_ARCH = "seed"  # the seed tutorial's two-conv CNN; the other fields of ModelConfig size it
BUILTIN_ARCH_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")  # a torchvision classification builder: resnet18, ...
USER_ARCH_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def is_user_arch(arch: str) -> bool:
    """`package.module:factory`: the user's own code (imported only when the user names it on the command line)."""
    return USER_ARCH_RE.fullmatch(arch) is not None


def arch_problem(arch: Any) -> str | None:
    """What is wrong with an architecture name, or None: `seed`, a builder name, or `package.module:factory`."""
    if not isinstance(arch, str) or not (BUILTIN_ARCH_RE.fullmatch(arch) or is_user_arch(arch)) or len(arch) > 200:
        return f"architecture {str(arch)[:60]!r} is neither a name (seed, resnet18, ...) nor package.module:factory"
    return None


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Everything needed to rebuild the network; saved in every checkpoint and export."""

    arch: str = SEED_ARCH  # the network; the fields below but in_channels, num_classes, image_size size the seed's
    in_channels: int = 1
    conv1_channels: int = 32
    conv2_channels: int = 64
    kernel_size: int = 5
    hidden: int = 1000
    num_classes: int = 10
    image_size: int = 28
    dropout: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        """Rebuild from a checkpoint's JSON, refusing wrong types and sizes no sane model has (a crafted header must
        not allocate a terabyte or crash torch)."""
        if not isinstance(data, dict):
            raise CheckpointError(f"model config must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise CheckpointError(f"model config has unknown fields {sorted(unknown)}; expected {sorted(known)}")
        data = dict(data)
        arch = data.pop("arch", SEED_ARCH)  # checkpoints before other networks: the seed's
        problem = arch_problem(arch)
        if problem:
            raise CheckpointError(f"model config {problem}")
        for name, value in data.items():
            low, high = CONFIG_BOUNDS[name]
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not is_number or (name != "dropout" and not isinstance(value, int)) or not low <= value <= high:
                raise CheckpointError(f"model config {name}={value!r} is not within {low}..{high}")
        cfg = cls(arch=arch, **data)
        if cfg.in_channels not in CHANNELS:
            raise CheckpointError(f"model config in_channels={cfg.in_channels}: a model takes 1 or 3 channels")
        if cfg.arch != SEED_ARCH:
            return cfg  # its module is built (and its weights checked against it) only on the torch side
        if cfg.kernel_size % 2 == 0 or cfg.image_size % 4:
            raise CheckpointError(
                f"model config kernel_size {cfg.kernel_size} must be odd and image_size {cfg.image_size} divisible by 4"
            )
        if cfg.parameters > MAX_PARAMETERS:
            raise CheckpointError(
                f"model config describes {cfg.parameters:,} parameters (at most {MAX_PARAMETERS:,}): the fields are "
                "each within bounds, but not together"
            )
        return cfg

    @property
    def parameters(self) -> int:
        """How many weights the network has (computed in Python integers: no allocation)."""
        k2 = self.kernel_size * self.kernel_size
        conv1 = self.conv1_channels * (self.in_channels * k2 + 1)
        conv2 = self.conv2_channels * (self.conv1_channels * k2 + 1)
        fc1 = self.hidden * (self.flat_features + 1)
        fc2 = self.num_classes * (self.hidden + 1)
        return conv1 + conv2 + fc1 + fc2

    @property
    def flat_features(self) -> int:
        side = self.image_size // 4  # two 2x2 max-pools
        return self.conv2_channels * side * side


# -------------------------------------------------------------------------------- checkpoint schema

WEIGHTS_NAME = "model.safetensors"
META_NAME = "checkpoint.json"
CHECKPOINT_FORMAT = "cnnkit-checkpoint/1"


@dataclass(frozen=True, kw_only=True)
class CheckpointMeta:
    """What travels with the weights: enough to rebuild, normalise, label and trace the model."""

    config: ModelConfig
    mean: tuple[float, ...]  # per input channel, on the [0, 1] scale
    std: tuple[float, ...]
    classes: tuple[str, ...]
    dataset: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    train_args: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1  # processes that trained it (torchrun)
    precision_reason: str = ""
    tuning: dict[str, Any] = field(default_factory=dict)  # how `--recipe auto` chose the recipe (empty: not tuned)
    geometry: Geometry = Geometry()  # the pixels it takes (checkpoints before it was recorded: MNIST's 1x28x28)

    def __post_init__(self) -> None:
        for name in ("mean", "std"):  # one number for a one-channel model, as before per-channel statistics
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(value) if isinstance(value, (list, tuple)) else (value,))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = self.config.to_dict()
        d["classes"] = list(self.classes)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["geometry"] = self.geometry.to_dict()
        return {"format": CHECKPOINT_FORMAT, **d}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> CheckpointMeta:
        if not isinstance(d, dict) or d.get("format") != CHECKPOINT_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise CheckpointError(f"{where}: not a cnnkit checkpoint (format {got!r}, expected {CHECKPOINT_FORMAT!r})")
        try:
            meta = cls(
                config=ModelConfig.from_dict(d["config"]),
                mean=per_channel(d["mean"]),
                std=per_channel(d["std"]),
                classes=tuple(d["classes"]),
                dataset=dict(d["dataset"]),
                metrics=dict(d.get("metrics") or {}),
                seed=d.get("seed"),
                versions=dict(d.get("versions") or {}),
                train_args=dict(d.get("train_args") or {}),
                world_size=int(d.get("world_size", 1)),
                precision_reason=str(d.get("precision_reason", "")),
                tuning=dict(d.get("tuning") or {}),
                geometry=_geometry(d.get("geometry"), d["config"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(f"{where}: incomplete checkpoint metadata ({exc})") from None
        except (CheckpointError, DataError) as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        problem = normalisation_problem(meta.mean, meta.std, meta.config.in_channels)
        if problem:
            raise CheckpointError(f"{where}: {problem}")
        g, c = meta.geometry, meta.config
        if (g.channels, g.height, g.width) != (c.in_channels, c.image_size, c.image_size):
            raise CheckpointError(f"{where}: geometry {g.shape} does not match the model config's input")
        if len(meta.classes) != meta.config.num_classes:
            raise CheckpointError(
                f"{where}: {len(meta.classes)} class names for a model with {meta.config.num_classes} outputs"
            )
        problem = class_names_problem(list(meta.classes))
        if problem:
            raise CheckpointError(f"{where}: {problem}")
        return meta


def normalisation_problem(mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> str | None:
    """What is wrong with per-channel statistics for `channels` channels (on the [0, 1] scale), or None."""
    ok = all(math.isfinite(m) and 0 <= m <= 1 for m in mean) and all(math.isfinite(s) and 0 < s <= 1 for s in std)
    if not ok or len(mean) != channels or len(std) != channels:
        return f"normalisation mean {list(mean)}, std {list(std)} is not usable for {channels} channel(s)"
    return None


def per_channel(value: Any) -> tuple[float, ...]:
    """Normalisation statistics as a checkpoint or a model's metadata records them: a list of 1-3 numbers, or one
    number (files before per-channel statistics). ValueError on anything else (the one rule for both)."""
    values = value if isinstance(value, list) else [value]
    if not 1 <= len(values) <= 3 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ValueError(f"normalisation {str(value)[:40]} is not 1-3 numbers")
    return tuple(float(v) for v in values)


def _geometry(recorded: Any, config: dict[str, Any]) -> Geometry:
    """The recorded geometry; a checkpoint from before it was recorded took MNIST's stretched, auto-inverted
    one-channel images of its config's size."""
    if recorded is None:
        side = int(config["image_size"])
        return Geometry(channels=int(config.get("in_channels", 1)), height=side, width=side)
    return Geometry.from_dict(recorded, "geometry")
