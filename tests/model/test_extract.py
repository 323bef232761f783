"""extract_function on literal model outputs of every shape seen in practice."""

from __future__ import annotations

import ast

import pytest

from coral.model.extract import extract_function

FIXED_GCD = ("def gcd(a, b):\n    if b == 0:\n        return a\n    else:\n"
             "        return gcd(b, a % b)\n")


def defines(source: str, name: str) -> bool:
    """Whether source parses and defines a top-level function `name`."""
    tree = ast.parse(source)
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


def run(source: str, name: str, *args):
    """Execute extracted source in a fresh namespace and call the function."""
    ns: dict = {}
    exec(compile(source, "<candidate>", "exec"), ns)
    return ns[name](*args)


def test_fenced_answer():
    text = f"```python\n{FIXED_GCD}```"
    out = extract_function(text, "gcd")
    assert out == FIXED_GCD
    assert run(out, "gcd", 35, 21) == 7


def test_plain_def_with_prose_around_it():
    # prose around a plain def: a narrow extractor returns nothing for this shape
    text = ("Here is the corrected function:\n\n" + FIXED_GCD +
            "\nThe bug was that the arguments of the recursive call were swapped.\n"
            "Now gcd(35, 21) returns 7.")
    out = extract_function(text, "gcd")
    assert out is not None and defines(out, "gcd")
    assert "bug" not in out
    assert run(out, "gcd", 35, 21) == 7


def test_completion_style_body_only_needs_signature():
    body = "    if b == 0:\n        return a\n    else:\n        return gcd(b, a % b)\n"
    assert extract_function(body, "gcd") is None
    out = extract_function(body, "gcd", signature="def gcd(a, b):")
    assert out is not None and run(out, "gcd", 35, 21) == 7


def test_completion_style_repeating_rest_of_signature_and_unindented_body():
    text = "a, b):\n    return a if b == 0 else gcd(b, a % b)\n\nprint(gcd(4, 6))"
    out = extract_function(text, "gcd", signature="def gcd(a, b):")
    assert out is not None and run(out, "gcd", 4, 6) == 2
    assert "print" not in out
    flat = "if b == 0:\n    return a\nreturn gcd(b, a % b)"
    out = extract_function(flat, "gcd", signature="def gcd(a, b):")
    assert out is not None and run(out, "gcd", 4, 6) == 2


def test_multiple_blocks_pick_the_one_defining_the_function():
    text = ("The buggy line is:\n```python\nreturn gcd(a % b, b)\n```\n"
            "Fixed version:\n```python\n" + FIXED_GCD + "```\n"
            "Test it:\n```python\nassert gcd(35, 21) == 7\n```\n")
    out = extract_function(text, "gcd")
    assert out == FIXED_GCD


def test_last_definition_wins_over_the_quoted_buggy_one():
    buggy = FIXED_GCD.replace("gcd(b, a % b)", "gcd(a % b, b)")
    text = f"Original:\n```python\n{buggy}```\nFixed:\n```python\n{FIXED_GCD}```"
    assert extract_function(text, "gcd") == FIXED_GCD


def test_missing_closing_fence_and_trailing_prose_inside_it():
    text = "```python\n" + FIXED_GCD + "\nThis works because gcd(a, 0) = a."
    out = extract_function(text, "gcd")
    assert out is not None and run(out, "gcd", 12, 18) == 6
    assert "works" not in out


def test_leading_indentation_is_removed():
    indented = "".join("    " + ln + "\n" for ln in FIXED_GCD.splitlines())
    text = "1. Replace the call:\n\n" + indented
    out = extract_function(text, "gcd")
    assert out is not None and run(out, "gcd", 12, 18) == 6


def test_imports_helpers_and_constants_are_kept_prose_and_calls_dropped():
    text = """Sure! Here's the fix:

```python
import heapq
from collections import defaultdict

INF = float("inf")

def _neighbours(graph, node):
    return graph.get(node, {})

@staticmethod_like
def shortest_path_length(length_by_edge, startnode, goalnode):
    unvisited = [(0, startnode)]
    visited = set()
    while unvisited:
        distance, node = heapq.heappop(unvisited)
        if node is goalnode:
            return distance
        visited.add(node)
# a column-0 comment inside the body
        for nextnode in node.successors:
            heapq.heappush(unvisited, (distance + length_by_edge[node, nextnode], nextnode))
    return INF

print(shortest_path_length({}, 1, 2))
```
"""
    out = extract_function(text, "shortest_path_length")
    assert out is not None and defines(out, "shortest_path_length")
    assert "import heapq" in out and "from collections import defaultdict" in out
    assert "INF = float" in out and "def _neighbours" in out
    assert "@staticmethod_like" in out
    assert "print(" not in out and "Sure" not in out
    assert "column-0 comment" in out


def test_truncated_answer_is_cut_back_to_what_parses():
    # max_new_tokens hit in the middle of a line.
    text = "```python\ndef bitcount(n):\n    count = 0\n    while n:\n        n &= n - 1\n" \
           "        count += 1\n    return count\n\ndef helper(x):\n    return (x +"
    out = extract_function(text, "bitcount")
    assert out is not None and run(out, "bitcount", 127) == 7


@pytest.mark.parametrize("text", [
    "", "I cannot help with that.", "```python\nprint('hello')\n```",
    "def other(x):\n    return x\n", "def gcd(a, b)\n    return a\n",
])
def test_no_function_gives_none(text):
    assert extract_function(text, "gcd") is None


# Realistic SmolLM2-135M-Instruct style answers (decoded with special tokens skipped).
SMOLLM2_FENCED = """```python
def bitcount(n):
    count = 0
    while n:
        n &= n - 1
        count += 1
    return count
```"""

SMOLLM2_CHATTY = """Here's the corrected code:

```python
def is_valid_parenthesization(parens):
    depth = 0
    for paren in parens:
        if paren == '(':
            depth += 1
        else:
            depth -= 1
            if depth < 0:
                return False

    return depth == 0
```

Explanation:

* The function `is_valid_parenthesization` takes a string of parentheses as input.
* It returns `True` only when every opening parenthesis is closed.

This code should work correctly for all inputs."""

SMOLLM2_PLAIN = """The bug is that the function returns `True` at the end. Here is the fix:

def is_valid_parenthesization(parens):
    depth = 0
    for paren in parens:
        if paren == '(':
            depth += 1
        else:
            depth -= 1
            if depth < 0:
                return False
    return depth == 0

In this corrected version, the function returns `depth == 0`, which is `True` only if the
parentheses are balanced."""

SMOLLM2_RAMBLING = """```python
def bitcount(n):
    count = 0
    while n:
        n &= n - 1
        count += 1
    return count
```
```python
def bitcount(n):
    count = 0
    while n:
        n &= n - 1
        count += 1
    return count
```
```python
def bitcount(n):
    count = 0
    while"""


@pytest.mark.parametrize("text,name,args,expected", [
    (SMOLLM2_FENCED, "bitcount", (255,), 8),
    (SMOLLM2_CHATTY, "is_valid_parenthesization", ("(()())",), True),
    (SMOLLM2_CHATTY, "is_valid_parenthesization", ("())(",), False),
    (SMOLLM2_PLAIN, "is_valid_parenthesization", ("((",), False),
    (SMOLLM2_RAMBLING, "bitcount", (7,), 3),
])
def test_smollm2_style_outputs(text, name, args, expected):
    out = extract_function(text, name)
    assert out is not None and defines(out, name)
    assert run(out, name, *args) == expected
