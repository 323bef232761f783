"""Tagged JSON encoding of test inputs and candidate results (the sandbox's wire format).

JSON alone loses the distinctions QuixBugs answers need (tuple vs list, sets, dicts with
tuple keys, ``inf``), and pickle must never be used on what a candidate process sends back
(unpickling is code execution). So values travel as JSON with one-key tag objects:

``{"t": [...]}`` tuple, ``{"s": [...]}`` set, ``{"d": [[k, v], ...]}`` dict,
``{"f": "inf" | "-inf" | "nan"}`` non-finite float, ``{"n": i}`` the i-th graph node (inputs only).

`encode` runs in the untrusted child on whatever the candidate returned: it walks exact
builtin types only, consumes iterators (generators are answers for e.g. ``flatten``) and
stops at `MAX_ITEMS` / `MAX_DEPTH` / `MAX_CHARS`, raising `Unserialisable` for anything else.
`decode` runs in the trusted judge and accepts only this grammar.
"""

from __future__ import annotations

import collections.abc
import json
import math
from typing import Any, Callable, Optional

MAX_ITEMS = 200_000
MAX_DEPTH = 200
MAX_CHARS = 2_000_000


class Unserialisable(ValueError):
    """A value cannot be carried by the wire format (odd type, too big or too deep)."""


class _Budget:
    """Mutable counters shared by one `encode` call."""

    def __init__(self) -> None:
        self.items = 0
        self.chars = 0

    def take(self, items: int = 1, chars: int = 0) -> None:
        """Spend budget, raising when a cap is passed."""
        self.items += items
        self.chars += chars
        if self.items > MAX_ITEMS or self.chars > MAX_CHARS:
            raise Unserialisable("result too large")


def _float(v: float) -> Any:
    """Finite floats stay numbers; inf/nan become tags."""
    if math.isfinite(v):
        return v
    return {"f": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}


def encode(value: Any, node_index: Optional[Callable[[Any], Optional[int]]] = None) -> Any:
    """Convert `value` to tagged JSON-able data; raise `Unserialisable` if it cannot be."""
    budget = _Budget()

    def enc(v: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise Unserialisable("result nested too deeply")
        budget.take()
        t = type(v)
        if v is None or t is bool:
            return v
        if t is int:
            if v.bit_length() > 4096:
                raise Unserialisable("integer too large")
            return v
        if t is float:
            return _float(v)
        if t is str:
            budget.take(0, len(v))
            return v
        if t is list:
            return [enc(x, depth + 1) for x in v]
        if t is tuple:
            return {"t": [enc(x, depth + 1) for x in v]}
        if t is set or t is frozenset:
            return {"s": [enc(x, depth + 1) for x in v]}
        if t is dict:
            return {"d": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in v.items()]}
        if node_index is not None:
            idx = node_index(v)
            if idx is not None:
                return {"n": idx}
        # Subclasses of builtins: read them through the base class so their own
        # overrides cannot change what is reported.
        for base, conv in ((bool, bool.__bool__), (int, int.__index__), (float, float.__float__),
                           (str, str.__str__)):
            if isinstance(v, base):
                return enc(conv(v), depth)
        if isinstance(v, list):
            return [enc(x, depth + 1) for x in list.__iter__(v)]
        if isinstance(v, tuple):
            return {"t": [enc(x, depth + 1) for x in tuple.__iter__(v)]}
        if isinstance(v, dict):  # defaultdict, OrderedDict, Counter ...
            return {"d": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in dict.items(v)]}
        if isinstance(v, (set, frozenset)):
            items = set.__iter__(v) if isinstance(v, set) else frozenset.__iter__(v)
            return {"s": [enc(x, depth + 1) for x in items]}
        if isinstance(v, (range, collections.abc.Iterator)):
            out = []
            for x in v:
                budget.take()
                out.append(x)
            return enc(out, depth)
        raise Unserialisable(f"result of type {t.__name__} is not a plain value")

    return enc(value, 0)


def dumps(value: Any, node_index: Optional[Callable[[Any], Optional[int]]] = None) -> str:
    """`encode` then compact JSON text."""
    try:
        return json.dumps(encode(value, node_index), separators=(",", ":"), allow_nan=False)
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        if isinstance(exc, Unserialisable):
            raise
        raise Unserialisable(str(exc)[:200]) from None


class NodeRef:
    """Placeholder for the i-th graph node inside decoded inputs (rebuilt by the child)."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeRef) and other.index == self.index

    def __hash__(self) -> int:
        return self.index

    def __repr__(self) -> str:
        return f"NodeRef({self.index})"


def decode(data: Any, nodes: Optional[list] = None, depth: int = 0) -> Any:
    """Rebuild Python values from tagged data; ``{"n": i}`` becomes nodes[i] (or a NodeRef)."""
    if depth > MAX_DEPTH + 2:
        raise ValueError("value nested too deeply")
    if data is None or isinstance(data, (bool, int, str)):
        return data
    if isinstance(data, float):
        return data
    if isinstance(data, list):
        return [decode(x, nodes, depth + 1) for x in data]
    if isinstance(data, dict) and len(data) == 1:
        (tag, body), = data.items()
        if tag == "t" and isinstance(body, list):
            return tuple(decode(x, nodes, depth + 1) for x in body)
        if tag == "s" and isinstance(body, list):
            return {decode(x, nodes, depth + 1) for x in body}
        if tag == "d" and isinstance(body, list):
            out = {}
            for pair in body:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise ValueError("bad dict entry")
                out[decode(pair[0], nodes, depth + 1)] = decode(pair[1], nodes, depth + 1)
            return out
        if tag == "f" and body in ("inf", "-inf", "nan"):
            return float(body)
        if tag == "n" and type(body) is int and body >= 0:
            if nodes is None:
                return NodeRef(body)
            return nodes[body]
    raise ValueError(f"not a wire value: {str(data)[:80]}")


def loads(text: str, nodes: Optional[list] = None) -> Any:
    """Parse JSON text and `decode` it; raise ValueError on anything malformed."""
    try:
        return decode(json.loads(text), nodes)
    except (RecursionError, TypeError, IndexError) as exc:
        raise ValueError(f"malformed value: {exc}"[:200]) from None
