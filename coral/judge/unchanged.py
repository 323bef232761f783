"""Is a candidate the buggy program handed back? An AST comparison (never executes code).

Copying the input is what a small model does most easily, and the buggy QuixBugs programs
pass about a third of their tests, so a copy must be recognised before it is run and scored
as nothing (status UNCHANGED). Comparison is on the AST, so comments, blank lines, quoting
and formatting do not matter, nor do docstrings (rewording one is not a repair).

A candidate is unchanged when its definition of the function is AST-equal to the buggy one
and every other top-level statement it has (imports, helpers, constants) also appears in the
buggy module: a candidate that adds or changes a helper goes to the judge as usual.
"""

from __future__ import annotations

import ast
from typing import Optional

from coral.judge.quixbugs import PARSE_ERRORS


def _without_docstring(node: ast.stmt) -> ast.stmt:
    """A def/class whose body starts with a string literal, minus that literal."""
    body = getattr(node, "body", None)
    if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body
            and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        node.body = body[1:] or [ast.Pass()]
    return node


def _statements(source: str) -> Optional[list[tuple[ast.stmt, str]]]:
    """Top-level statements with their canonical dumps (docstrings dropped), or None."""
    try:
        tree = ast.parse(source)
    except PARSE_ERRORS:
        return None
    # Bare strings at top level (module docstring, QuixBugs' trailing description) do nothing.
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(
        n.value, ast.Constant) and isinstance(n.value.value, str))]
    return [(node, ast.dump(_without_docstring(node), annotate_fields=False)) for node in body]


def _function_dump(statements: list[tuple[ast.stmt, str]], function: str) -> Optional[str]:
    """The dump of the top-level `def function` (the last one, as Python would bind it)."""
    found = None
    for node, dump in statements:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            found = dump
    return found


def is_unchanged(code: str, buggy_source: str, function: str) -> bool:
    """Whether `code` is the buggy program's `function` handed back (see module docstring)."""
    mine, theirs = _statements(code), _statements(buggy_source)
    if mine is None or theirs is None:
        return False
    target = _function_dump(mine, function)
    if target is None or target != _function_dump(theirs, function):
        return False
    known = {dump for _, dump in theirs}
    return all(dump in known for _, dump in mine)
