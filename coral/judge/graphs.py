"""The test cases of the 9 graph programs, transcribed as data from python_testcases/*.py.

Upstream tests for these programs are pytest functions that build `Node` objects and assert
on the result. The sandbox child must receive inputs only (never the expected answers), so
each test function is written here as a `GraphCase`: the nodes as upstream constructs them
(``Node(value, successor, successors)``), the attribute assignments made afterwards, the call
arguments (``N(i)`` is the i-th node), how the result is read (the projection) and the
expected answer. Module-level nodes that upstream tests mutate in order (detect_cycle) are
written out as the state each test sees. `quixbugs.load_problems` checks that every
upstream file still has as many test functions as are transcribed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coral.judge.codec import NodeRef as N

INF = float("inf")


@dataclass(frozen=True)
class GraphCase:
    """One upstream graph test: node constructors, later assignments, call args, answer."""

    nodes: tuple = ()        # (value, successor index | None, successors indices | None)
    sets: tuple = ()         # (node index, attribute, index | list of indices)
    args: tuple = ()         # call arguments; N(i) marks node i
    projection: str = "value"  # value | truthy | values | linked
    expected: Any = None


def _all_pairs(n: int, known: dict) -> dict:
    """Floyd-Warshall answer: every ordered pair is inf unless listed; (i, i) is 0."""
    out = {(i, j): INF for i in range(n) for j in range(n) if i != j}
    out.update({(i, i): 0 for i in range(n)})
    out.update(known)
    return out


_STATIONS = ((("Westminster", None, None), ("Waterloo", None, [0]),
              ("Trafalgar Square", None, [0, 1]), ("Canary Wharf", None, [1, 2]),
              ("London Bridge", None, [3, 2]), ("Tottenham Court Road", None, [4, 3])))
_BRANCHING = (("F", None, None), ("E", None, None), ("D", None, None), ("C", None, [0]),
              ("B", None, [1]), ("A", None, [4, 3, 2]))


def _search_cases() -> tuple:
    """Shared by breadth_first_search and depth_first_search (identical upstream files)."""
    return (
        GraphCase(_STATIONS, (), (N(5), N(0)), "truthy", True),
        GraphCase(_BRANCHING, (), (N(5), N(1)), "truthy", True),
        GraphCase((("F", None, None), ("E", None, None)), (), (N(0), N(1)), "truthy", False),
        GraphCase((("F", None, None),), (), (N(0), N(0)), "truthy", True),
        GraphCase(_BRANCHING, ((1, "successors", [5]),), (N(5), N(0)), "truthy", True),
    )


_CHAIN = ((1, None, None), (2, 0, None), (3, 1, None), (4, 2, None), (5, 3, None))

_TOPO1 = tuple((v, None, None) for v in (5, 7, 3, 11, 8, 2, 9, 10))
_TOPO2 = tuple((v, None, None) for v in (5, 0, 4, 1, 2, 3))
_TOPO3 = tuple((v, None, None) for v in (
    "3/4 cup milk", "1 egg", "1 Tbl oil", "1 cup mix", "heat syrup", "heat griddle",
    "pour 1/4 cup", "turn when bubbly", "eat"))
_SPL_NODES = (("1", None, None), ("5", None, None), ("4", None, [1]), ("3", None, [2]),
              ("2", None, [0, 3, 2]), ("0", None, [4, 1]))
_SPL_EDGES = {(N(5), N(4)): 3, (N(5), N(1)): 10, (N(4), N(0)): 1, (N(4), N(3)): 2,
              (N(4), N(2)): 4, (N(3), N(2)): 1, (N(2), N(1)): 1}

GRAPH_CASES: dict[str, tuple[GraphCase, ...]] = {
    "breadth_first_search": _search_cases(),
    "depth_first_search": _search_cases(),
    "detect_cycle": (
        GraphCase(_CHAIN, (), (N(4),), "truthy", False),
        GraphCase(_CHAIN, ((0, "successor", 4),), (N(4),), "truthy", True),
        GraphCase(_CHAIN, ((0, "successor", 1),), (N(1),), "truthy", True),
        GraphCase(((6, None, None), (7, 0, None)), (), (N(1),), "truthy", False),
        GraphCase(((0, None, None),), (), (N(0),), "truthy", False),
        GraphCase(_CHAIN, ((0, "successor", 1),), (N(4),), "truthy", True),
    ),
    "reverse_linked_list": (
        GraphCase(_CHAIN, (), (N(4),), "linked", [0, [1, 2, 3, 4, 5]]),
        GraphCase(((0, None, None),), (), (N(0),), "linked", [0, [0]]),
        GraphCase((), (), (None,), "linked", [None, []]),
    ),
    "shortest_path_length": (
        GraphCase(_SPL_NODES, (), (_SPL_EDGES, N(5), N(0)), "value", 4),
        GraphCase(_SPL_NODES, (), (_SPL_EDGES, N(5), N(1)), "value", 7),
        GraphCase(_SPL_NODES, (), (_SPL_EDGES, N(4), N(4)), "value", 0),
        GraphCase(_SPL_NODES, (), (_SPL_EDGES, N(0), N(1)), "value", INF),
    ),
    "topological_ordering": (
        GraphCase(_TOPO1, ((0, "outgoing_nodes", [3]), (1, "outgoing_nodes", [3, 4]),
                           (2, "outgoing_nodes", [4, 7]), (3, "incoming_nodes", [0, 1]),
                           (3, "outgoing_nodes", [5, 6, 7]), (4, "incoming_nodes", [1, 2]),
                           (4, "outgoing_nodes", [6]), (5, "incoming_nodes", [3]),
                           (6, "incoming_nodes", [3, 4]), (7, "incoming_nodes", [3, 2])),
                  ([N(i) for i in range(8)],), "values", [5, 7, 3, 11, 8, 10, 2, 9]),
        GraphCase(_TOPO2, ((0, "outgoing_nodes", [4, 1]), (2, "outgoing_nodes", [1, 3]),
                           (4, "incoming_nodes", [0]), (4, "outgoing_nodes", [5]),
                           (1, "incoming_nodes", [0, 2]), (3, "incoming_nodes", [2, 5]),
                           (5, "incoming_nodes", [4]), (5, "outgoing_nodes", [3])),
                  ([N(1), N(3), N(4), N(5), N(2), N(0)],), "values", [4, 5, 0, 2, 3, 1]),
        GraphCase(_TOPO3, ((0, "outgoing_nodes", [3]), (1, "outgoing_nodes", [3]),
                           (2, "outgoing_nodes", [3]), (3, "incoming_nodes", [0, 1, 2]),
                           (3, "outgoing_nodes", [4, 6]), (5, "outgoing_nodes", [6]),
                           (6, "incoming_nodes", [3, 5]), (6, "outgoing_nodes", [7]),
                           (7, "incoming_nodes", [6]), (7, "outgoing_nodes", [8]),
                           (4, "incoming_nodes", [3]), (4, "outgoing_nodes", [8]),
                           (8, "incoming_nodes", [4, 7])),
                  ([N(i) for i in range(9)],), "values",
                  ["3/4 cup milk", "1 egg", "1 Tbl oil", "heat griddle", "1 cup mix",
                   "pour 1/4 cup", "heat syrup", "turn when bubbly", "eat"]),
    ),
    "minimum_spanning_tree": (
        GraphCase(args=({(1, 2): 10, (2, 3): 15, (3, 4): 10, (1, 4): 10},),
                  expected={(1, 2), (3, 4), (1, 4)}),
        GraphCase(args=({(1, 2): 6, (1, 3): 1, (1, 4): 5, (2, 3): 5, (2, 5): 3, (3, 4): 5,
                         (3, 5): 6, (3, 6): 4, (4, 6): 2, (5, 6): 6},),
                  expected={(2, 5), (1, 3), (2, 3), (4, 6), (3, 6)}),
        GraphCase(args=({(1, 2): 6, (1, 3): 1, (2, 4): 2},), expected={(1, 2), (1, 3), (2, 4)}),
    ),
    "shortest_path_lengths": (
        GraphCase(args=(6, {(0, 2): 3, (0, 5): 5, (2, 1): -2, (2, 3): 7, (2, 4): 4,
                            (3, 4): -5, (4, 5): -1}),
                  expected=_all_pairs(6, {(0, 2): 3, (0, 5): 4, (2, 1): -2, (2, 3): 7,
                                          (2, 4): 2, (3, 4): -5, (4, 5): -1, (0, 1): 1,
                                          (0, 3): 10, (0, 4): 5, (2, 5): 1, (3, 5): -6})),
        GraphCase(args=(5, {(0, 1): 3, (1, 2): 5, (2, 3): -2, (3, 4): 7}),
                  expected=_all_pairs(5, {(0, 1): 3, (1, 2): 5, (2, 3): -2, (3, 4): 7,
                                          (0, 2): 8, (0, 3): 6, (0, 4): 13, (1, 3): 3,
                                          (1, 4): 10, (2, 4): 5})),
        GraphCase(args=(4, {(0, 1): 3, (2, 3): 5}),
                  expected=_all_pairs(4, {(0, 1): 3, (2, 3): 5})),
        GraphCase(args=(3, {(0, 1): 3, (1, 2): 5, (2, 0): -1}),
                  expected=_all_pairs(3, {(0, 1): 3, (1, 2): 5, (2, 0): -1, (0, 2): 8,
                                          (1, 0): 4, (2, 1): 2})),
    ),
    "shortest_paths": (
        GraphCase(args=("A", {("A", "B"): 3, ("A", "C"): 3, ("A", "F"): 5, ("C", "B"): -2,
                              ("C", "D"): 7, ("C", "E"): 4, ("D", "E"): -5, ("E", "F"): -1}),
                  expected={"A": 0, "C": 3, "B": 1, "E": 5, "D": 10, "F": 4}),
        GraphCase(args=("A", {("A", "B"): 1, ("B", "C"): 2, ("C", "D"): 3, ("D", "E"): -1,
                              ("E", "F"): 4}),
                  expected={"A": 0, "C": 3, "B": 1, "E": 5, "D": 6, "F": 9}),
        GraphCase(args=("A", {("A", "B"): 1, ("B", "C"): 2, ("C", "D"): 3, ("D", "E"): -1,
                              ("E", "D"): 1, ("E", "F"): 4}),
                  expected={"A": 0, "C": 3, "B": 1, "E": 5, "D": 6, "F": 9}),
    ),
}


def graph_spec(case: GraphCase) -> dict:
    """The part of a case the child needs to rebuild the nodes (JSON-able, no answers)."""
    return {"nodes": [list(n) for n in case.nodes], "sets": [list(s) for s in case.sets]}
