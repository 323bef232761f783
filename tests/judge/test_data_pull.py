"""`coral data pull` / `coral data path`: prepare QuixBugs where `coral` looks for it.

Each test points $CORAL_CACHE at a temp folder and runs from a folder with no ../shared beside
it, with the checkout's own sibling hidden, so only what the test prepares can be found.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from coral.cli import main
from coral.judge import quixbugs


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """Nothing set and nothing beside the checkout or the cwd; the cache in tmp_path."""
    monkeypatch.delenv("CORAL_QUIXBUGS", raising=False)
    monkeypatch.setenv("CORAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(quixbugs, "__file__", str(tmp_path / "co" / "x" / "coral" / "j" / "q.py"))
    (tmp_path / "cwd" / "here").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd" / "here")
    return tmp_path / "cache" / "quixbugs"


def test_pull_from_copies_then_path_finds_it(nowhere, quixbugs_dir, capsys):
    assert main(["data", "path"]) == 2
    assert "coral data pull" in capsys.readouterr().err
    assert main(["data", "pull", "--from", str(quixbugs_dir)]) == 0
    assert not nowhere.is_symlink()
    assert len(quixbugs.load_problems(nowhere)) == 40
    assert main(["data", "path"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(nowhere.resolve())
    # found now: a plain pull leaves it as it is
    assert main(["data", "pull"]) == 0
    assert "nothing to prepare" in capsys.readouterr().out
    # --link replaces the copy by a link to the checkout
    assert main(["data", "pull", "--from", str(quixbugs_dir), "--link"]) == 0
    assert nowhere.is_symlink() and nowhere.resolve() == quixbugs_dir


def test_pull_clones_upstream_when_nothing_is_found(nowhere, quixbugs_dir, tmp_path,
                                                   monkeypatch, capsys):
    upstream = tmp_path / "upstream"
    shutil.copytree(quixbugs_dir, upstream, ignore=shutil.ignore_patterns(".git"))
    git = ["git", "-C", str(upstream), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "data"]):
        subprocess.run(git + args, check=True)
    monkeypatch.setattr(quixbugs, "UPSTREAM", upstream.as_uri())
    assert main(["data", "pull"]) == 0
    assert "(cloned)" in capsys.readouterr().out
    assert quixbugs.resolve_path(None) == nowhere.resolve()


def test_pull_without_network_says_how_to_work_offline(nowhere, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(quixbugs, "UPSTREAM", (tmp_path / "no-such-repo").as_uri())
    assert main(["data", "pull"]) == 2
    err = capsys.readouterr().err
    assert "could not clone" in err and "coral data pull --from PATH" in err
    assert not nowhere.exists() and list(nowhere.parent.iterdir()) == []   # nothing half-made


def test_a_wrong_setting_is_an_error_not_a_clone(nowhere, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CORAL_QUIXBUGS", str(tmp_path))
    assert main(["data", "pull"]) == 2
    assert "$CORAL_QUIXBUGS" in capsys.readouterr().err and not nowhere.exists()
