"""Nested JSON number lists (V2 `data`, /v1 pixel rows) walked within bounds before any array is built: a
request that holds strings, booleans, more elements than its shape or deeper nesting than a tensor has is refused
after looking at no more than that many elements, never turned into a padded array first."""

from __future__ import annotations

from typing import Any

from cnnkit.errors import RequestError


def flat_numbers(data: Any, limit: int, max_depth: int, what: str, integers: bool = True) -> list[Any]:
    """The numbers of `data` (a nested list) in row-major order, or RequestError as soon as one is not a number
    (an integer, where `integers`; never a boolean), more than `limit` appear, or nesting passes `max_depth`."""
    if not isinstance(data, list):
        raise RequestError(f"{what} must be a list of numbers")
    out: list[Any] = []
    stack: list[tuple[list[Any], int, int]] = [(data, 0, 1)]  # (list, next index, depth)
    while stack:
        items, i, depth = stack.pop()
        if i >= len(items):
            continue
        stack.append((items, i + 1, depth))
        value = items[i]
        if isinstance(value, list):
            if depth >= max_depth:
                raise RequestError(f"{what} is nested deeper than {max_depth} levels")
            stack.append((value, 0, depth + 1))
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integers and not isinstance(value, int)):
            kind = "integers" if integers else "numbers"
            raise RequestError(f"{what} must hold {kind} only, found {type(value).__name__} {str(value)[:20]!r}")
        out.append(value)
        if len(out) > limit:
            raise RequestError(f"{what} holds more than the {limit} elements its shape allows")
    return out
