"""The sizes that keep the house livable (docs/ARCHITECTURE.md), checked in CI by `make lint`:
no file over 350 lines, no function over 80 lines, none over 9 parameters outside the click layer (cnnkit/cli).

    python scripts/check_sizes.py [src/cnnkit] [--report]

Exit 1 naming each offender; `--report` also prints the largest file, the longest function and the longest
parameter list (the figures the refactoring issues quote).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_FILE_LINES = 350
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 9
CLICK_LAYER = "cli"  # click commands take one parameter per option by design


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs] + ([a.vararg] if a.vararg else []) + ([a.kwarg] if a.kwarg else [])
    return len([n for n in names if n.arg not in ("self", "cls")])


def scan(root: Path) -> tuple[list[str], dict[str, tuple[int, str]]]:
    """(problems, {"file"|"function"|"parameters": (largest figure, where)})."""
    problems: list[str] = []
    top = {"file": (0, ""), "function": (0, ""), "parameters": (0, "")}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        text = path.read_text()
        lines = len(text.splitlines())
        top["file"] = max(top["file"], (lines, str(rel)))
        if lines > MAX_FILE_LINES:
            problems.append(f"{rel}: {lines} lines (at most {MAX_FILE_LINES})")
        in_cli = CLICK_LAYER in path.relative_to(root).parts[:-1]
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            where = f"{rel}:{node.lineno} {node.name}"
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            top["function"] = max(top["function"], (length, where))
            if length > MAX_FUNCTION_LINES:
                problems.append(f"{where}: {length} lines (at most {MAX_FUNCTION_LINES})")
            if in_cli:
                continue
            count = _parameters(node)
            top["parameters"] = max(top["parameters"], (count, where))
            if count > MAX_PARAMETERS:
                problems.append(f"{where}: {count} parameters (at most {MAX_PARAMETERS}; an options object?)")
    return problems, top


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    root = Path(args[0] if args else "src/cnnkit")
    problems, top = scan(root)
    if "--report" in argv:
        for kind, (figure, where) in top.items():
            print(f"largest {kind}: {figure} ({where})")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
