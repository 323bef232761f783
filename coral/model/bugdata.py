"""Versioned bug-repair training set built from the Python standard library, never QuixBugs.

Adapters are evaluated on QuixBugs, so training on it would leak the answers. Instead we take
small module-level functions of the interpreter's own standard library (correct, idiomatic
code that every node of a Ray cluster has), inject one realistic bug into each with an AST
transformation, and keep the pairs whose buggy version still parses and differs.

Both sides of a pair are `ast.unparse`d with the docstring removed, so the only difference
between `buggy` and `fixed` is the injected bug (no comment or layout noise to learn).
Every choice is drawn from one numpy Generator seeded by TrainingConfig.data_seed, files and
functions are visited in sorted order, and nothing uses salted `hash()`: the set, and its
`data_version`, are the same in every process for the same interpreter and config.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import sysconfig
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from coral.config import TrainingConfig

log = logging.getLogger(__name__)

# Bump whenever selection, filtering or bug injection changes: it is part of adapter keys.
RECIPE_VERSION = "stdlib-bugs-v1"

# The QuixBugs programs (python_programs/*.py, without the *_test helpers), hard-coded so that
# building the training set never depends on (or reads) the evaluation data.
QUIXBUGS_NAMES = (
    "bitcount", "breadth_first_search", "bucketsort", "depth_first_search", "detect_cycle",
    "find_first_in_sorted", "find_in_sorted", "flatten", "gcd", "get_factors", "hanoi",
    "is_valid_parenthesization", "kheapsort", "knapsack", "kth", "lcs_length", "levenshtein",
    "lis", "longest_common_subsequence", "max_sublist_sum", "mergesort",
    "minimum_spanning_tree", "next_palindrome", "next_permutation", "node", "pascal",
    "possible_change", "powerset", "quicksort", "reverse_linked_list", "rpn_eval",
    "shortest_path_length", "shortest_path_lengths", "shortest_paths", "shunting_yard",
    "sieve", "sqrt", "subsequences", "to_base", "topological_ordering", "wrap",
)

# Parts of the stdlib tree that are not ordinary library code (tests, GUIs, vendored trees).
SKIP_DIRS = ("site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3",
             "turtledemo", "ensurepip", "tkinter", "__pycache__", "config-", "pydoc_data",
             "encodings", "msilib")
MIN_LINES, MAX_LINES = 4, 30
MAX_PER_FILE = 3   # spread the set over many modules rather than a few big ones
# Names whose use makes a function an I/O or process helper rather than an algorithm.
IMPURE_NAMES = ("print", "open", "input", "exec", "eval", "os", "sys", "subprocess", "socket",
                "shutil", "time", "threading", "warnings", "_os", "_sys")


def max_chars(max_length: int) -> int:
    """Longest function (characters) kept: prompt + target must fit in `max_length` tokens."""
    # About 3 characters per token for code; the prompt holds the function once and the
    # answer once more, plus ~70 tokens of instruction and chat markup.
    return max(160, (max_length - 70) * 3 // 2)


def _skipped(dirname: str) -> bool:
    """Whether a directory of the stdlib tree is excluded from the corpus."""
    return any(dirname == s or (s.endswith("-") and dirname.startswith(s)) for s in SKIP_DIRS)


def stdlib_files(root: Optional[Path] = None) -> list[Path]:
    """The standard library's .py files in sorted order, without tests and vendored trees."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    out = []
    # os.walk with pruning: site-packages alone can hold tens of thousands of files.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
        out.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return sorted(out)


def _is_quixbugs_name(name: str) -> bool:
    """Whether a function is named like a QuixBugs program (ignoring case and underscores)."""
    return name.strip("_").lower() in QUIXBUGS_NAMES


def _pure_enough(fn: ast.FunctionDef) -> bool:
    """No decorators, nested scopes, generators, globals or I/O-ish names."""
    if fn.decorator_list:
        return False
    for node in ast.walk(fn):
        if node is not fn and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                ast.ClassDef, ast.Lambda)):
            return False
        if isinstance(node, (ast.Yield, ast.YieldFrom, ast.Await, ast.Global, ast.Nonlocal)):
            return False
        if isinstance(node, ast.Name) and node.id in IMPURE_NAMES:
            return False
    return True


def _strip_docstring(fn: ast.FunctionDef) -> ast.FunctionDef:
    """The function without its docstring (a body of only a docstring is left as is)."""
    body = fn.body
    if (len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        fn.body = body[1:]
    return fn


def candidate_functions(path: Path, limit_chars: int) -> Iterator[tuple[str, ast.FunctionDef]]:
    """(source segment, docstring-free def) of each usable module-level function of a file."""
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return  # a few stdlib files are templates or other encodings: not corpus material
    lines = text.splitlines(keepends=True)
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or _is_quixbugs_name(node.name):
            continue
        if node.name.startswith("test") or not _pure_enough(node):
            continue
        # The def's own lines (what ast.get_source_segment returns for a whole statement;
        # that helper re-splits the file on every call, which made this quadratic).
        segment = "".join(lines[node.lineno - 1: node.end_lineno])
        fn = _strip_docstring(node)
        fixed = ast.unparse(fn)
        n_lines = fixed.count("\n") + 1
        if MIN_LINES <= n_lines <= MAX_LINES and len(fixed) <= limit_chars:
            yield segment, fn


def _rows(tcfg: TrainingConfig, files: list[Path]) -> tuple[list[dict], str]:
    """Draw the pairs and a digest of the source texts they came from."""
    rng = np.random.default_rng(tcfg.data_seed)
    limit = max_chars(tcfg.max_length)
    rows, corpus, counts = [], hashlib.sha256(), {}
    root = Path(sysconfig.get_paths()["stdlib"])
    for i in rng.permutation(len(files)):
        path = files[int(i)]
        funcs = list(candidate_functions(path, limit))
        if not funcs:
            continue
        take = min(MAX_PER_FILE, len(funcs))
        for j in sorted(int(k) for k in rng.choice(len(funcs), size=take, replace=False)):
            segment, fn = funcs[j]
            pair = inject_bug(fn, rng, counts)
            if pair is None:
                continue
            buggy, fixed, kind = pair
            counts[kind] = counts.get(kind, 0) + 1
            origin = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
            rows.append({"name": fn.name, "buggy": buggy, "fixed": fixed, "bug_kind": kind,
                         "origin": origin})
            corpus.update(segment.encode())
            if len(rows) == tcfg.examples:
                return rows, corpus.hexdigest()
    log.warning("stdlib yielded only %d of %d requested examples", len(rows), tcfg.examples)
    return rows, corpus.hexdigest()


# --------------------------------------------------------------------------- bug injection
# Each kind lists its candidate sites in a fresh copy of the function (ast.walk order is
# deterministic), one site is drawn, mutated in place, and the copy is unparsed.

_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.Div: ast.Mult,
               ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.LShift: ast.RShift,
               ast.RShift: ast.LShift, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
_BOUNDARY = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
_NEGATED = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
            ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Lt: ast.Gt, ast.Gt: ast.Lt}


def _nodes(fn: ast.FunctionDef, kind: type) -> list:
    """All nodes of one type inside the function body, in ast.walk order."""
    return [n for n in ast.walk(fn) if isinstance(n, kind) and n is not fn]


def _local_names(fn: ast.FunctionDef) -> list[str]:
    """Parameters and assigned names of the function, sorted (candidates for a wrong name)."""
    names = {a.arg for a in fn.args.args + fn.args.kwonlyargs + fn.args.posonlyargs}
    names |= {n.id for n in ast.walk(fn)
              if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return sorted(names)


def _sites(kind: str, fn: ast.FunctionDef) -> list:
    """Places in `fn` where a bug of `kind` can be injected."""
    if kind == "operator_swap":
        # Not on string formatting/concatenation: '%r' // s is no plausible slip.
        return [n for n in _nodes(fn, ast.BinOp) if type(n.op) in _BINOP_SWAP
                and not any(isinstance(o, ast.JoinedStr) or (isinstance(o, ast.Constant)
                            and isinstance(o.value, (str, bytes))) for o in (n.left, n.right))]
    if kind == "comparison_boundary":
        return [(n, i) for n in _nodes(fn, ast.Compare) for i, op in enumerate(n.ops)
                if type(op) in _BOUNDARY]
    if kind == "comparison_negated":
        return [(n, i) for n in _nodes(fn, ast.Compare) for i, op in enumerate(n.ops)
                if type(op) in _NEGATED]
    if kind == "boolean_swap":
        return _nodes(fn, ast.BoolOp)
    if kind == "off_by_one":
        return [n for n in _nodes(fn, ast.Constant)
                if type(n.value) is int and abs(n.value) < 1000]
    if kind == "swapped_arguments":
        return [n for n in _nodes(fn, ast.Call) if len(n.args) >= 2
                and not any(isinstance(a, ast.Starred) for a in n.args[:2])]
    if kind == "dropped_statement":
        return [(body, i) for n in [fn] + _nodes(fn, ast.stmt)
                for body in (getattr(n, "body", None), getattr(n, "orelse", None))
                if isinstance(body, list) and len(body) >= 2 for i in range(len(body))]
    if kind == "wrong_variable":
        names = _local_names(fn)
        return [n for n in _nodes(fn, ast.Name)
                if isinstance(n.ctx, ast.Load) and n.id in names and len(names) >= 2]
    if kind == "wrong_return":
        return [n for n in _nodes(fn, ast.Return) if n.value is not None]
    if kind == "negated_condition":
        return _nodes(fn, ast.If) + _nodes(fn, ast.While)
    raise ValueError(f"unknown bug kind {kind}")


BUG_KINDS = ("operator_swap", "comparison_boundary", "comparison_negated", "boolean_swap",
             "off_by_one", "swapped_arguments", "dropped_statement", "wrong_variable",
             "wrong_return", "negated_condition")


def _apply(kind: str, site, fn: ast.FunctionDef, rng) -> None:
    """Mutate one site in place."""
    if kind == "operator_swap":
        site.op = _BINOP_SWAP[type(site.op)]()
    elif kind in ("comparison_boundary", "comparison_negated"):
        node, i = site
        table = _BOUNDARY if kind == "comparison_boundary" else _NEGATED
        node.ops[i] = table[type(node.ops[i])]()
    elif kind == "boolean_swap":
        site.op = ast.Or() if isinstance(site.op, ast.And) else ast.And()
    elif kind == "off_by_one":
        site.value = site.value + (1 if rng.random() < 0.5 else -1)
    elif kind == "swapped_arguments":
        site.args[0], site.args[1] = site.args[1], site.args[0]
    elif kind == "dropped_statement":
        body, i = site
        del body[i]
    elif kind == "wrong_variable":
        others = [n for n in _local_names(fn) if n != site.id]
        site.id = others[int(rng.integers(len(others)))]
    elif kind == "wrong_return":
        # Return another local (a plausible slip) or, without one, the first operand/None.
        used = {n.id for n in ast.walk(site.value) if isinstance(n, ast.Name)}
        others = [n for n in _local_names(fn) if n not in used]
        if others:
            site.value = ast.Name(id=others[int(rng.integers(len(others)))], ctx=ast.Load())
        elif isinstance(site.value, ast.BinOp):
            site.value = site.value.left
        else:
            site.value = ast.Constant(value=None)
    elif kind == "negated_condition":
        test = site.test
        site.test = test.operand if isinstance(test, ast.UnaryOp) and isinstance(
            test.op, ast.Not) else ast.UnaryOp(op=ast.Not(), operand=test)


def inject_bug(fn: ast.FunctionDef, rng, counts: Optional[dict] = None
               ) -> Optional[tuple[str, str, str]]:
    """(buggy, fixed, kind) for one function, or None when no kind yields a real change.

    With `counts` (bug kind -> pairs so far) the kind is drawn among the applicable kinds
    used least so far, which balances the set: otherwise kinds that apply to almost every
    function (a return, a statement to drop) would crowd out operator and comparison bugs.
    """
    import copy

    fixed = ast.unparse(fn)
    kinds = [k for k in BUG_KINDS if _sites(k, fn)]
    if not kinds:
        return None
    if counts is not None:
        fewest = min(counts.get(k, 0) for k in kinds)
        kinds = [k for k in kinds if counts.get(k, 0) == fewest]
    kind = kinds[int(rng.integers(len(kinds)))]
    mutant = copy.deepcopy(fn)
    sites = _sites(kind, mutant)
    _apply(kind, sites[int(rng.integers(len(sites)))], mutant, rng)
    buggy = ast.unparse(ast.fix_missing_locations(mutant))
    try:
        ast.parse(buggy)
    except SyntaxError:
        return None
    if buggy == fixed:
        return None
    return buggy, fixed, kind


def recipe(tcfg: TrainingConfig) -> dict:
    """The fields that decide the training set (and so go into its version)."""
    return {"recipe": RECIPE_VERSION, "examples": tcfg.examples, "data_seed": tcfg.data_seed,
            "max_length": tcfg.max_length, "bug_kinds": list(BUG_KINDS),
            "lines": [MIN_LINES, MAX_LINES], "max_per_file": MAX_PER_FILE}


def build_rows(tcfg: TrainingConfig, files: Optional[list[Path]] = None) -> tuple[list[dict], str]:
    """The training pairs as plain dicts, and their data_version."""
    rows, corpus_digest = _rows(tcfg, stdlib_files() if files is None else files)
    if not rows:
        raise RuntimeError("no training pairs could be built from the standard library")
    doc = {"recipe": recipe(tcfg), "corpus": corpus_digest,
           "rows": hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()}
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return rows, f"{RECIPE_VERSION}-{digest[:16]}"


def build_dataset(tcfg: TrainingConfig):
    """(datasets.Dataset with columns name, buggy, fixed, bug_kind, origin; data_version)."""
    import datasets

    rows, version = build_rows(tcfg)
    return datasets.Dataset.from_list(rows), version
