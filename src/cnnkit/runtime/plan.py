"""What `engine="auto"` runs: the engine choice `cnnkit optimize` measured fastest at each batch size for this very
file on this very CPU (`runtime.json` beside the model), or ONNX Runtime, one stream, where nothing applies.

The record names the file's SHA-256 and the CPU model and instruction-set flags it was measured on (`runtime.cpu`);
a record for another file, another CPU model or other flags (one model name can hide different kernels) is not used,
and the Classifier says why."""

from __future__ import annotations

import bisect
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.atomic import sha256_file, write_text
from cnnkit.runtime import openvino_engine
from cnnkit.runtime.cpu import cpu_flags, cpu_model
from cnnkit.runtime.options import EngineChoice

RECORD = "runtime.json"
FORMAT = "cnnkit-runtime/1"
MAX_CHOICES = 8  # distinct engine choices one record may name: each opens sessions of its own


@dataclass(frozen=True, kw_only=True)
class EnginePlan:
    """Engine choices by batch size: a batch of n images runs on the choice for the largest size <= n (the
    smallest size's choice below it)."""

    routes: tuple[tuple[int, EngineChoice], ...]
    source: str  # where the plan came from, for messages and `doctor`
    note: str | None = None  # why a record beside the model was not used

    def route(self, n: int) -> int:
        """The index in `routes` of the choice a batch of `n` images runs on (the one rule of routing)."""
        return max(bisect.bisect_right(self.sizes, n) - 1, 0)

    def choice_for(self, n: int) -> EngineChoice:
        return self.routes[self.route(n)][1]

    @functools.cached_property
    def sizes(self) -> list[int]:
        return [size for size, _ in self.routes]

    @property
    def choices(self) -> list[EngineChoice]:
        return list(dict.fromkeys(c for _, c in self.routes))


DEFAULT = EnginePlan(routes=((1, EngineChoice()),), source="default")


def _default(note: str) -> EnginePlan:
    """The default plan, with why a record beside the model was not used."""
    return EnginePlan(routes=DEFAULT.routes, source="default", note=note)


def record_path(model: Path) -> Path:
    return model.parent / RECORD


def load(model: str | Path | bytes, device: str, concurrent: bool = False) -> EnginePlan:
    """The plan for `model` on `device` ('cpu' or 'cuda'): the record's, where it applies, else the default. With
    `concurrent` (callers that keep several batches in flight, as `cnnkit serve`), the choices measured that way
    where the record has them (`in_flight_winners`), else the one-caller choices."""
    if isinstance(model, (bytes, bytearray, memoryview)) or device == "cuda":
        return DEFAULT
    path = record_path(Path(model))
    if not path.is_file():
        return DEFAULT
    try:
        record = json.loads(path.read_text())
        entry = record["models"][Path(model).name]
        if entry["sha256"] != sha256_file(model):
            return _default(f"{path} was measured for another file")
        if record["cpu"] != cpu_model():
            return _default(f"{path} was measured on a {str(record['cpu'])[:80]!r}")  # quoted: no forged lines
        flags = record.get("cpu_flags")
        if flags != cpu_flags():  # same name, other kernels (and INT8 arithmetic): measured elsewhere, not trusted
            shown = "no CPU flags" if flags is None else "+".join(map(str, flags))[:120] or "none of the flags"
            return _default(f"{path} was measured on a CPU with {shown!r}, this one has {'+'.join(cpu_flags())!r}")
        table = entry.get("in_flight_winners") if concurrent else None
        routes = sorted((int(size), EngineChoice(**c)) for size, c in (table or entry["winners"]).items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return _default(f"{path} is unreadable ({type(exc).__name__})")
    except Exception as exc:  # an EngineChoice the record names that this cnnkit does not accept
        return _default(f"{path}: {exc}")
    if any(c.engine == "openvino" for _, c in routes) and not openvino_engine.available():
        return _default(f"{path} names OpenVINO, which is not installed")
    if any(c.precision == "bf16" for _, c in routes) and "BF16" not in openvino_engine.capabilities():
        return _default(f"{path} names bf16, which this CPU lacks")
    if not routes:
        return _default(f"{path} records no engine choice")
    if len({c for _, c in routes}) > MAX_CHOICES:  # each choice opens its own sessions
        return _default(f"{path} names more than {MAX_CHOICES} engine choices")
    kept = [r for i, r in enumerate(routes) if i == 0 or r[1] != routes[i - 1][1]]  # one route per change
    return EnginePlan(routes=tuple(kept), source=str(path))


def save(
    model: Path,
    winners: dict[int, EngineChoice],
    measured: dict[str, Any],
    in_flight_winners: dict[int, EngineChoice] | None = None,
) -> Path:
    """Record `winners` (batch size -> choice, for one caller) and `in_flight_winners` (for callers with batches in
    flight) for `model` beside it, keeping other files' entries."""
    path = record_path(model)
    record: dict[str, Any] = {"format": FORMAT, "cpu": cpu_model(), "cpu_flags": cpu_flags(), "models": {}}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            same_cpu = old.get("cpu") == record["cpu"] and old.get("cpu_flags") == record["cpu_flags"]
            if same_cpu and isinstance(old.get("models"), dict):
                record["models"] = dict(old["models"])
        except (OSError, ValueError, AttributeError, TypeError, RecursionError):
            pass  # a record this cnnkit cannot read is replaced, not merged
    record["models"][model.name] = {
        "sha256": sha256_file(model),
        "winners": {str(b): c.to_dict() for b, c in sorted(winners.items())},
        "measured": measured,
    }
    if in_flight_winners:
        record["models"][model.name]["in_flight_winners"] = {
            str(b): c.to_dict() for b, c in sorted(in_flight_winners.items())
        }
    write_text(path, json.dumps(record, indent=2) + "\n")
    return path
