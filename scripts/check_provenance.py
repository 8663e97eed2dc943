"""Every result file under benchmarks/results says what it measured: the CPU model and its instruction-set flags (or
the GPU), the commit, whether the tree had changes, and the command (in the machine record, or at the document's top
level where the older scripts put it). A file written before these were recorded is
named in benchmarks/results/NO_PROVENANCE.txt until it is regenerated or removed: a listed file that now passes, or
an unlisted one that fails, fails this check (run by `make lint`, so in CI).

    python scripts/check_provenance.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
LEGACY = RESULTS / "NO_PROVENANCE.txt"
NEEDED = ("commit", "uncommitted_changes", "command")
CONTAINERS = ("machine", "environment", "env")  # where the scripts and `cnnkit bench --json` put the record


def record(doc: object) -> dict | None:
    """The machine record of a result document: the top level's `machine`/`environment`, or the document itself."""
    if not isinstance(doc, dict):
        return None
    for key in CONTAINERS:
        if isinstance(doc.get(key), dict):
            return doc[key]
    return doc if ("cpu" in doc or "gpu" in doc) else None


def missing(path: Path) -> list[str]:
    """What `path`'s record lacks (empty: it passes)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return [f"unreadable ({exc})"]
    rec = record(doc)
    if rec is None:
        return ["a machine record"]
    lacks = [k for k in NEEDED if k not in rec and not (k == "command" and isinstance(doc.get("command"), str))]
    if "gpu" not in rec and not ("cpu" in rec and isinstance(rec.get("cpu_flags"), list)):
        lacks.insert(0, "cpu and cpu_flags (or gpu)")
    return lacks


def main() -> int:
    listed = {ln.strip() for ln in LEGACY.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    problems = []
    for path in sorted(RESULTS.rglob("*.json")):
        name = path.relative_to(RESULTS).as_posix()
        lacks = missing(path)
        if lacks and name not in listed:
            problems.append(f"{name}: no {', '.join(lacks)}")
        elif not lacks and name in listed:
            problems.append(f"{name}: passes now; take it off {LEGACY.name}")
    gone = sorted(n for n in listed if not (RESULTS / n).is_file())
    problems += [f"{n}: listed in {LEGACY.name} but not there" for n in gone]
    for line in problems:
        print(f"provenance: {line}", file=sys.stderr)
    if not problems:
        print(f"provenance: every result file has its record ({len(listed)} older files listed in {LEGACY.name})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
