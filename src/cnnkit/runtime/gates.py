"""Where an INT8 file's accuracy gate was passed: the CPU model and instruction-set flags (and engine) it was judged
on, recorded beside the file in exports.json (`gated_on`) by `cnnkit export`, `verify` and `optimize`.

INT8 arithmetic is not the same on every x86 CPU: with AVX-512 VNNI or AVX-VNNI the engines use other kernels than
with AVX2 alone (whose u8·s8 pair sums can saturate), so a file that kept its accuracy on one instruction set is not
known to keep it on another. The runtime trusts an INT8 file on a CPU whose flags a passing gate recorded, and says
in one line how to re-check it otherwise. A file with no record (made elsewhere, or before gates were recorded) has
nothing to compare, and runs. Torch-free: reads JSON and /proc/cpuinfo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit import contract
from cnnkit.atomic import sha256_file
from cnnkit.runtime.cpu import cpu_flags, cpu_model

KEY = "gated_on"  # the exports.json entry's list of {cpu, cpu_flags, engine, agreement, accuracy_change}


def here(engine: str) -> dict[str, Any]:
    """This CPU and `engine`, as a gate record names them."""
    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "engine": engine}


def recorded(model: Path) -> list[dict[str, Any]] | None:
    """The gates recorded for `model` (its exports.json entry, for these very bytes), or None where none is."""
    entry = contract.read_manifest(model.parent).get(model.name)
    if not isinstance(entry, dict) or not isinstance(gates := entry.get(KEY), list):  # no record: no hashing
        return None
    try:
        if entry.get("sha256") != sha256_file(model):
            return None
    except OSError:
        return None
    return [g for g in gates if isinstance(g, dict)]


def problem(model: Path, precision: str, engines: list[str]) -> str | None:
    """Why the INT8 file `model` is not trusted on this CPU in `engines`, or None: its record names no passing gate
    on this CPU's instruction-set flags in each of them."""
    if precision != "int8":
        return None
    gates = recorded(model)
    if gates is None:
        return None
    flags = cpu_flags()
    for engine in engines:
        if any(g.get("cpu_flags") == flags and g.get("engine") == engine for g in gates):
            continue
        seen = sorted({"+".join(map(str, g.get("cpu_flags") or [])) or "none" for g in gates if isinstance(g, dict)})
        where = "; ".join(seen)[:200] or "no CPU"
        return (
            f"{model}: this INT8 file passed its accuracy gate on CPUs with {where!r}, not on this one "
            f"({'+'.join(flags) or 'none'!r}) in {engine}: INT8 arithmetic differs between instruction sets. "
            f"Re-check it here with `cnnkit verify {model}` (it records the gate), or run the fp32 file"
        )
    return None
