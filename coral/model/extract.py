"""Recover one function's source from a model's free-form answer.

Models answer in several shapes, and a fix lost to a narrow extractor is a fix the search
never sees (see docs/history.md). `extract_function` accepts:
- fenced answers (```python ... ```), several blocks (the one defining the function wins,
  the last such block when there are several), a missing closing fence;
- plain answers: prose, then ``def name(...)``, then more prose, possibly all indented;
- completion-style answers: only the body (or the continuation after the signature), when
  the caller passes the signature line (``def name(args):``) taken from the buggy source.
It returns source that parses and holds ``def name``, with the module-level imports, helper
functions/classes and constants written alongside it in the same block; prose is dropped.
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Optional

FENCE = re.compile(r"^\s*```")
MAX_REPAIR_LINES = 40  # how many trailing lines we may drop from a truncated function


def _blocks(text: str) -> tuple[list[str], str]:
    """Fenced code blocks (an unclosed last fence runs to the end) and the text outside them."""
    blocks: list[str] = []
    outside: list[str] = []
    current: Optional[list[str]] = None
    for line in text.splitlines():
        if FENCE.match(line):
            if current is None:
                current = []
                rest = line.strip()[3:]
                if rest.endswith("```") and len(rest) > 3:  # ```code``` on one line
                    blocks.append(rest[:-3])
                    current = None
            else:
                blocks.append("\n".join(current))
                current = None
            continue
        (outside if current is None else current).append(line)
    if current is not None:
        blocks.append("\n".join(current))
    return blocks, "\n".join(outside)


def _def_pattern(name: str) -> re.Pattern:
    """Regex of the line that starts ``def name(`` (any indentation, maybe async)."""
    return re.compile(rf"^([ \t]*)(?:async[ \t]+)?def\s+{re.escape(name)}\s*\(", re.M)


def _chunks(lines: list[str]) -> list[list[str]]:
    """Top-level statements by indentation: a chunk starts at a non-blank column-0 line.

    Comment lines never start a chunk (a column-0 comment inside a body is legal Python), and
    decorator lines stay attached to what they decorate.
    """
    chunks: list[list[str]] = []
    for line in lines:
        starts = bool(line) and not line[0].isspace() and not line.startswith("#")
        after_decorator = bool(chunks) and any(s.startswith("@") for s in chunks[-1]) and all(
            not s.strip() or s.startswith("@") for s in chunks[-1])
        if (starts and not after_decorator) or not chunks:
            chunks.append([line])
        else:
            chunks[-1].append(line)
    return [c for c in chunks if any(s.strip() for s in c)]


def _parses(source: str) -> Optional[ast.Module]:
    """The module AST of `source`, or None when it is not valid Python."""
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def _keep(tree: ast.Module, name: str) -> bool:
    """Whether a parsed chunk is code to keep: imports, defs, classes, plain constants."""
    if len(tree.body) != 1:
        return False
    node = tree.body[0]
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef,
                         ast.ClassDef)):
        return True
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        # Constants (INF = float("inf")) are kept; example calls of the function are not.
        return not any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))
    return False


def _is_target(tree: ast.Module, name: str) -> bool:
    """Whether a parsed chunk is the definition of `name`."""
    node = tree.body[0] if len(tree.body) == 1 else None
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name


def _repair(chunks: list[list[str]], i: int) -> Optional[str]:
    """Make chunk i (a broken def) parse: absorb following chunks, else drop trailing lines."""
    for j in range(i + 1, min(len(chunks), i + 6)):
        source = "\n".join(line for c in chunks[i:j + 1] for line in c)
        if _parses(source):
            return source
    lines = chunks[i]
    for cut in range(1, min(len(lines) - 1, MAX_REPAIR_LINES) + 1):
        source = "\n".join(lines[:-cut])
        if _parses(source):
            return source
    return None


def _from_segment(segment: str, name: str, repair: bool = True) -> Optional[str]:
    """Imports, helpers and the (last) definition of `name` found in one code segment.

    With `repair`, a definition that does not parse (a truncated answer) is mended.
    """
    match = None
    for match in _def_pattern(name).finditer(segment):
        pass
    if match is None:
        return None
    indent = match.group(1).replace("\t", "    ")
    lines = segment.expandtabs(4).splitlines()
    if indent:  # the whole answer is indented (a list item, a quote): shift it left
        lines = [line[len(indent):] if line.startswith(indent) else line.lstrip()
                 for line in lines]
    lines = [line.rstrip() for line in lines]
    chunks = _chunks(lines)
    kept: list[str] = []
    target: Optional[int] = None
    for i, chunk in enumerate(chunks):
        source = "\n".join(chunk)
        tree = _parses(source)
        if tree is None and repair and _def_pattern(name).search(source):
            source = _repair(chunks, i)
            tree = _parses(source) if source else None
        if tree is None or not _keep(tree, name):
            continue
        if _is_target(tree, name):
            if target is not None:        # a later definition replaces an earlier one
                kept[target] = ""
            target = len(kept)
        kept.append(source.strip("\n"))
    if target is None:
        return None
    result = "\n\n".join(k for k in kept if k) + "\n"
    return result if _parses(result) else kept[target] + "\n"


def _from_body(text: str, name: str, signature: str) -> Optional[str]:
    """Completion style: `text` continues after `signature`; join them and extract again."""
    sig = signature.strip()
    if not _def_pattern(name).match(sig):
        return None
    body = text
    head = sig.split("(", 1)[1]
    stripped = body.lstrip()
    if stripped.startswith(head):        # the model repeated the rest of the signature
        body = stripped[len(head):]
    body = body.lstrip("\n").rstrip()
    first = next((ln for ln in body.splitlines() if ln.strip()), "")
    if first and not first[0].isspace():  # body emitted without its indentation
        body = textwrap.indent(body, "    ")
    return _from_segment(f"{sig}\n{body}\n", name)


def extract_function(text: str, name: str, signature: Optional[str] = None) -> Optional[str]:
    """Source of function `name` (with its imports and helpers) from a model answer, or None."""
    if not text:
        return None
    blocks, outside = _blocks(text)
    candidates = list(reversed(blocks)) + [outside, text]
    # A complete definition anywhere beats a mended truncated one (a rambling model repeats
    # the fix and is cut off in the last copy).
    for repair in (False, True):
        for segment in candidates:
            found = _from_segment(segment, name, repair)
            if found is not None:
                return found
    if signature:
        body = blocks[0] if blocks else text
        return _from_body(body, name, signature)
    return None
