"""Tagged JSON encoding of test inputs and candidate results (the sandbox's wire format).

JSON alone loses the distinctions QuixBugs answers need (tuple vs list, sets, dicts with
tuple keys, ``inf``), and pickle must never be used on what a candidate process sends back
(unpickling is code execution). So values travel as JSON with one-key tag objects:

``{"t": [...]}`` tuple, ``{"s": [...]}`` set, ``{"d": [[k, v], ...]}`` dict,
``{"f": "inf" | "-inf" | "nan"}`` non-finite float, ``{"n": i}`` the i-th graph node (inputs only).

`encode` runs in the untrusted child on whatever the candidate returned: it walks exact
builtin types only, consumes iterators (generators are answers for e.g. ``flatten``) and
stops at `MAX_ITEMS` / `MAX_DEPTH` / `MAX_CHARS`, raising `Unserialisable` for anything else.
`decode` rebuilds real values; the child uses it for the judge's (trusted) test inputs.

What a candidate returns is read in the judge by `loads_result` instead, which builds no
hashed container from candidate data (integers that collide in a set or dict would cost the
judge quadratic time): a set becomes a `Bag` of its elements sorted by `order_key`, a dict the
`Pairs` sorted by key, and `coral.judge.quixbugs.outputs_match` compares those canonical forms.
Each Bag and Pairs stores its elements' order keys, computed once when it is built, so the
work is linear in the size of the value however deeply sets nest; `loads_result` also takes a
CPU-time deadline: the judge-side time a candidate's results may cost (charged to it).
"""

from __future__ import annotations

import collections.abc
import json
import math
import time
from typing import Any, Callable, Optional

MAX_ITEMS = 200_000
MAX_DEPTH = 200
MAX_CHARS = 2_000_000


class Unserialisable(ValueError):
    """A value cannot be carried by the wire format (odd type, too big or too deep)."""


class DecodeBudgetExceeded(Unserialisable):
    """Decoding a candidate's result used up the judge-side time the candidate was given."""


_CLOCK_EVERY = 1024


class _Budget:
    """Mutable counters shared by one `encode` or `loads_result` call; optionally a CPU-time
    deadline (`time.thread_time`) checked every `_CLOCK_EVERY` items."""

    def __init__(self, cpu_deadline: Optional[float] = None) -> None:
        self.items = 0
        self.chars = 0
        self.cpu_deadline = cpu_deadline

    def take(self, items: int = 1, chars: int = 0) -> None:
        """Spend budget, raising when a cap is passed."""
        self.items += items
        self.chars += chars
        if self.items > MAX_ITEMS or self.chars > MAX_CHARS:
            raise Unserialisable("result too large")
        if (self.cpu_deadline is not None and not self.items % _CLOCK_EVERY
                and time.thread_time() > self.cpu_deadline):
            raise DecodeBudgetExceeded("result too costly to decode")


def _float(v: float) -> Any:
    """Finite floats stay numbers; inf/nan become tags."""
    if math.isfinite(v):
        return v
    return {"f": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}


class _Encoder:
    """One `encode` call: its budget and the optional graph-node lookup."""

    def __init__(self, node_index: Optional[Callable[[Any], Optional[int]]]) -> None:
        self.budget, self.node_index = _Budget(), node_index

    def enc(self, v: Any, depth: int) -> Any:
        """Exact builtin types here; anything else through `_other`."""
        if depth > MAX_DEPTH:
            raise Unserialisable("result nested too deeply")
        self.budget.take()
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
            self.budget.take(0, len(v))
            return v
        if t is list:
            return [self.enc(x, depth + 1) for x in v]
        if t is tuple:
            return {"t": [self.enc(x, depth + 1) for x in v]}
        if t is set or t is frozenset:
            return {"s": [self.enc(x, depth + 1) for x in v]}
        if t is dict:
            return {"d": [[self.enc(k, depth + 1), self.enc(x, depth + 1)]
                          for k, x in v.items()]}
        return self._other(v, depth)

    def _other(self, v: Any, depth: int) -> Any:
        """Graph nodes, subclasses of builtins (read through the base class, so their own
        overrides cannot change what is reported) and iterators (consumed)."""
        if self.node_index is not None:
            idx = self.node_index(v)
            if idx is not None:
                return {"n": idx}
        for base, conv in ((bool, bool.__bool__), (int, int.__index__), (float, float.__float__),
                           (str, str.__str__)):
            if isinstance(v, base):
                return self.enc(conv(v), depth)
        if isinstance(v, list):
            return [self.enc(x, depth + 1) for x in list.__iter__(v)]
        if isinstance(v, tuple):
            return {"t": [self.enc(x, depth + 1) for x in tuple.__iter__(v)]}
        if isinstance(v, dict):  # defaultdict, OrderedDict, Counter ...
            return {"d": [[self.enc(k, depth + 1), self.enc(x, depth + 1)]
                          for k, x in dict.items(v)]}
        if isinstance(v, (set, frozenset)):
            items = set.__iter__(v) if isinstance(v, set) else frozenset.__iter__(v)
            return {"s": [self.enc(x, depth + 1) for x in items]}
        if isinstance(v, (range, collections.abc.Iterator)):
            out = []
            for x in v:
                self.budget.take()
                out.append(x)
            return self.enc(out, depth)
        raise Unserialisable(f"result of type {type(v).__name__} is not a plain value")


def encode(value: Any, node_index: Optional[Callable[[Any], Optional[int]]] = None) -> Any:
    """Convert `value` to tagged JSON-able data; raise `Unserialisable` if it cannot be."""
    return _Encoder(node_index).enc(value, 0)


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


class Bag(tuple):
    """A set as its distinct elements sorted by their order keys (compared without hashing).

    `keys` holds the elements' order keys, computed once when the Bag is built, so that an
    enclosing Bag or Pairs, and the comparison, never recompute them (deeply nested sets
    around a large value would otherwise cost the judge time quadratic in its size)."""

    keys: tuple = ()

    @property
    def key(self) -> tuple:
        """This Bag's own order key."""
        return (6, self.keys)


class Pairs(tuple):
    """A dict as its (key, value) pairs sorted by the order key of the key, keys distinct;
    `keys` holds the order keys of its keys, `vkeys` (computed on first use) of its values."""

    keys: tuple = ()

    @property
    def key(self) -> tuple:
        """This Pairs' own order key (the values' keys computed once, when first asked)."""
        cached = self.__dict__.get("_key")
        if cached is None:
            cached = self._key = (7, tuple(zip(self.keys, (order_key(v) for _, v in self))))
        return cached


def order_key(v: Any) -> tuple:
    """A total order over canonical values; equal keys iff Python's set/dict would merge them
    (1 == 1.0 == True; NaN equals only NaN here). Bags and Pairs answer with their stored key:
    the work is linear in the size of `v`, whatever its nesting."""
    if v is None:
        return (0,)
    if isinstance(v, (bool, int, float)):
        return (2,) if v != v else (1, v)
    if isinstance(v, str):
        return (3, v)
    if isinstance(v, (Bag, Pairs)):
        return v.key
    if isinstance(v, tuple):
        return (4, tuple(order_key(x) for x in v))
    if isinstance(v, list):
        return (5, tuple(order_key(x) for x in v))
    return (8, repr(v))  # NodeRef and other placeholders of trusted data


def _bag(items: list) -> Bag:
    """Sorted, with duplicates (equal order keys) dropped."""
    keyed = sorted(((order_key(x), i) for i, x in enumerate(items)), key=lambda t: t[0])
    out, keys, last = [], [], object()
    for key, i in keyed:
        if key != last:
            out.append(items[i])
            keys.append(key)
            last = key
    bag = Bag(out)
    bag.keys = tuple(keys)
    return bag


def _pairs(pairs: list) -> Pairs:
    """Sorted by key; of duplicate keys the last one wins, as in a dict literal."""
    keyed = sorted(((order_key(k), -i) for i, (k, _) in enumerate(pairs)), key=lambda t: t)
    out, keys, last = [], [], object()
    for key, neg in keyed:
        if key != last:
            out.append(pairs[-neg])
            keys.append(key)
            last = key
    result = Pairs(out)
    result.keys = tuple(keys)
    return result


def canonical(value: Any, depth: int = 0) -> Any:
    """A trusted real value (expected answer) in canonical form: sets -> Bag, dicts -> Pairs."""
    if depth > MAX_DEPTH + 2:
        raise ValueError("value nested too deeply")
    if isinstance(value, (Bag, Pairs)):
        return value
    if isinstance(value, (set, frozenset)):
        return _bag([canonical(x, depth + 1) for x in value])
    if isinstance(value, dict):
        return _pairs([(canonical(k, depth + 1), canonical(x, depth + 1))
                       for k, x in value.items()])
    if isinstance(value, tuple):
        return tuple(canonical(x, depth + 1) for x in value)
    if isinstance(value, list):
        return [canonical(x, depth + 1) for x in value]
    return value


def _result(data: Any, budget: _Budget, depth: int) -> Any:
    """Tagged JSON from a candidate -> canonical value; only the wire grammar, within caps."""
    if depth > MAX_DEPTH + 2:
        raise ValueError("value nested too deeply")
    budget.take()
    if data is None or type(data) in (bool, int, float):
        return data
    if type(data) is str:
        budget.take(0, len(data))
        return data
    if type(data) is list:
        return [_result(x, budget, depth + 1) for x in data]
    if type(data) is dict and len(data) == 1:
        (tag, body), = data.items()
        if tag == "f" and body in ("inf", "-inf", "nan"):
            return float(body)
        if type(body) is list and tag in ("t", "s"):
            items = [_result(x, budget, depth + 1) for x in body]
            return tuple(items) if tag == "t" else _bag(items)
        if type(body) is list and tag == "d":
            if not all(type(p) is list and len(p) == 2 for p in body):
                raise ValueError("bad dict entry")
            return _pairs([(_result(k, budget, depth + 1), _result(x, budget, depth + 1))
                           for k, x in body])
    raise ValueError(f"not a wire value: {str(data)[:80]}")


def loads_result(text: str, cpu_deadline: Optional[float] = None) -> Any:
    """A candidate's encoded result -> canonical value; ValueError on anything malformed,
    `DecodeBudgetExceeded` once this thread's CPU time passes `cpu_deadline`."""
    if len(text) > 4 * MAX_CHARS:
        raise ValueError("result too large")
    try:
        return _result(json.loads(text), _Budget(cpu_deadline), 0)
    except DecodeBudgetExceeded:
        raise
    except (RecursionError, TypeError, Unserialisable) as exc:
        raise ValueError(f"malformed value: {exc}"[:200]) from None
