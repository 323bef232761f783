"""The stdlib bug-repair training set: determinism, validity, no QuixBugs leakage."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coral.model.bugdata import (BUG_KINDS, QUIXBUGS_NAMES, build_dataset, build_rows, inject_bug,
                           stdlib_files)
from coral.config import TrainingConfig

REPO = Path(__file__).resolve().parents[2]
SMALL = TrainingConfig(examples=64, data_seed=0)


@pytest.fixture(scope="module")
def rows_and_version():
    """The 64-pair set for data_seed 0."""
    return build_rows(SMALL)


def test_quixbugs_names_match_the_checkout(quixbugs_dir):
    names = {p.stem for p in (quixbugs_dir / "python_programs").glob("*.py")
             if not p.stem.endswith("_test")}
    assert names == set(QUIXBUGS_NAMES)


def test_pairs_are_valid_bugs_and_not_quixbugs(rows_and_version):
    rows, version = rows_and_version
    assert len(rows) == 64 and version.startswith("stdlib-bugs-v1-")
    for row in rows:
        assert row["name"].strip("_").lower() not in QUIXBUGS_NAMES
        assert row["buggy"] != row["fixed"] and row["bug_kind"] in BUG_KINDS
        fixed = ast.parse(row["fixed"]).body[0]
        buggy = ast.parse(row["buggy"]).body[0]
        assert fixed.name == buggy.name == row["name"]
        assert 4 <= row["fixed"].count("\n") + 1 <= 30
    assert not any("site-packages" in r["origin"] or r["origin"].startswith("test")
                   for r in rows)
    # kinds are balanced: every kind applies somewhere in 64 stdlib functions
    assert {r["bug_kind"] for r in rows} == set(BUG_KINDS)


def test_dataset_columns_and_version(rows_and_version):
    ds, version = build_dataset(SMALL)
    assert {"name", "buggy", "fixed", "bug_kind"} <= set(ds.column_names)
    assert version == rows_and_version[1] and ds[0]["buggy"] == rows_and_version[0][0]["buggy"]


def test_version_depends_on_recipe_fields(rows_and_version):
    _, other_seed = build_rows(TrainingConfig(examples=64, data_seed=1))
    _, other_size = build_rows(TrainingConfig(examples=32, data_seed=0))
    assert len({rows_and_version[1], other_seed, other_size}) == 3


def test_same_version_in_other_processes_and_hash_seeds(rows_and_version):
    code = ("from coral.model.bugdata import build_rows; from coral.config import TrainingConfig; "
            "print(build_rows(TrainingConfig(examples=64, data_seed=0))[1])")
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(REPO))
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True, cwd=REPO)
        assert out.stdout.strip() == rows_and_version[1]


def test_stdlib_walk_skips_tests_and_site_packages():
    files = stdlib_files()
    assert files == sorted(files) and len(files) > 100
    assert not any("site-packages" in p.parts or "test" in p.parts for p in files)


SAMPLE = '''
def clamp(value, low, high):
    if value < low and low <= high:
        return low + 0
    result = min(value, high)
    return result
'''


@pytest.mark.parametrize("kind", BUG_KINDS)
def test_each_kind_changes_the_function(kind):
    fn = ast.parse(SAMPLE).body[0]
    # force the kind by pretending every other kind was used already
    counts = {k: (0 if k == kind else 99) for k in BUG_KINDS}
    buggy, fixed, got = inject_bug(fn, np.random.default_rng(0), counts)
    assert got == kind and buggy != fixed and fixed == ast.unparse(ast.parse(SAMPLE))
    ast.parse(buggy)
