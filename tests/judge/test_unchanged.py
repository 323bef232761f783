"""The AST comparison that recognises the buggy program handed back (status UNCHANGED)."""

from __future__ import annotations

from coral.judge.quixbugs import load_problems
from coral.judge.unchanged import is_unchanged

BUGGY = '''
def bitcount(n):
    count = 0
    while n:
        n ^= n - 1
        count += 1
    return count

"""
Bitcount: the number of 1-bits of n.
"""
'''


def test_every_buggy_program_is_unchanged_and_no_reference_fix_is(quixbugs_dir):
    problems = load_problems(quixbugs_dir)
    assert all(is_unchanged(p.buggy_source, p.buggy_source, p.function) for p in problems)
    assert not any(is_unchanged(p.reference_source, p.buggy_source, p.function)
                   for p in problems)


def test_formatting_comments_and_docstrings_do_not_count_as_changes():
    copy = ("# fixed!\ndef bitcount(n):\n    '''Count bits.'''\n    count=0\n"
            "    while n: n ^= n - 1; count += 1\n    return (count)\n")
    assert is_unchanged(copy, BUGGY, "bitcount")


def test_real_edits_and_added_helpers_are_changes():
    fix = BUGGY.replace("n ^= n - 1", "n &= n - 1")
    assert not is_unchanged(fix, BUGGY, "bitcount")
    helper = "import math\n\n" + BUGGY
    assert not is_unchanged(helper, BUGGY, "bitcount")          # judged as usual
    assert not is_unchanged("", BUGGY, "bitcount")              # missing, not unchanged
    assert not is_unchanged("def bitcount(n:\n", BUGGY, "bitcount")
    assert not is_unchanged(BUGGY.replace("bitcount", "other"), BUGGY, "bitcount")
