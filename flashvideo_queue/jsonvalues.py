"""The one way the client parses JSON it did not write itself (workflow files, ``--set`` values, the manifest,
server answers): nesting bounded up front and numbers finite, so nothing later (copies, comparisons, hashing,
the graph checks) can hit Python's recursion limit or pass a NaN on to a node.

``json.loads`` itself recurses (it raises RecursionError somewhere below ~1,000 levels, depending on the caller's
own stack), so a deeper text is refused here with the limit named, and a parsed value is then walked without
recursion to hold it to ``MAX_DEPTH``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

MAX_DEPTH = 100  # a ComfyUI workflow nests about 8 levels; widget values rarely more than a few


class JsonProblem(ValueError):
    """Why a text is not acceptable JSON, phrased to follow "<what>: " in the caller's message. ``syntax``: it is
    not JSON at all (rather than JSON this client refuses)."""

    def __init__(self, message: str, syntax: bool = False, line: int = 0, column: int = 0):
        super().__init__(message)
        self.syntax, self.line, self.column = syntax, line, column


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonProblem(f"the number {text} is too large to be a finite number")
    return value


def _no_constant(name: str) -> Any:
    raise JsonProblem(f"{name} is not a JSON number (JSON has no NaN or Infinity); write a finite number")


def deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True if ``value`` nests lists/dicts more than ``limit`` levels deep (walked with a stack, not recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads(text: str | bytes) -> Any:
    """The parsed value, or JsonProblem: not JSON (with line and column), nested deeper than MAX_DEPTH, or a
    NaN/Infinity/overflowing number."""
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        value, deep = None, True
    except JsonProblem:
        raise
    except json.JSONDecodeError as e:
        raise JsonProblem(f"not valid JSON: {e.msg}", True, e.lineno, e.colno) from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise JsonProblem(f"{e}; is this really the JSON you meant?") from None
    else:
        deep = deeper_than(value)
    if deep:
        raise JsonProblem(f"nested more than {MAX_DEPTH} levels deep (the limit: no workflow or value needs more)")
    return value


def loads_or_none(text: str | bytes) -> Optional[Any]:
    """For answers where unparsable means "not what we expected" (the caller then says so): None."""
    try:
        return loads(text)
    except (JsonProblem, UnicodeDecodeError):
        return None
