"""Config of the judge box: which QuixBugs problems, and the sandbox's limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from coral.config.fields import setting

# Where QuixBugs is looked for when `dataset.quixbugs` is null (coral.judge.quixbugs.resolve_path);
# README.md says the same, and the error names every place tried.
QUIXBUGS_SEARCH_ORDER = (
    "dataset.quixbugs in the config, else $CORAL_QUIXBUGS, else the copy `coral data pull` "
    "prepares in <$CORAL_CACHE or ~/.cache/coral>/quixbugs, else ../shared/quixbugs beside "
    "the checkout or the working directory")


@dataclass(frozen=True)
class DatasetConfig:
    """Which QuixBugs checkout and problems, and how they split into train and held-out."""

    quixbugs: Optional[str] = setting(
        None, doc="QuixBugs checkout; looked for in this order: " + QUIXBUGS_SEARCH_ORDER)
    problems: tuple[str, ...] = setting((), doc="problem names to use (empty: all 40)")
    held_out_fraction: float = setting(
        0.25, ge=0.0, lt=1.0, doc="share of problems kept out of the search, scored at the end")
    split_seed: int = setting(0, ge=0, doc="seed of the train/held-out split")
    max_train_problems: int = setting(
        0, ge=0, doc="cap on training problems, to shorten a run (0: no cap)")


@dataclass(frozen=True)
class SandboxConfig:
    """Isolation and limits of the judge's sandbox (see docs/judge.md)."""

    isolation: Literal["auto", "strict", "guard"] = setting(
        "auto", doc="auto: the kernel boundary (bubblewrap + seccomp) when this machine has it, "
        "else the in-process guard with a warning; strict: refuse to judge without the kernel "
        "boundary (CI; $CORAL_SANDBOX_ISOLATION=strict upgrades auto to strict); guard: the "
        "in-process guard alone (macOS, no bubblewrap), chosen explicitly, warns")

    time_floor_s: float = setting(1.0, gt=0.0, doc="least time a test case may take (s)")
    time_factor: float = setting(
        10.0, ge=1.0, doc="per-test limit = max(floor, factor x the reference fix's time)")
    candidate_timeout_s: float = setting(
        60.0, gt=0.0, doc="wall budget of one candidate over all its test cases (s)")
    memory_mb: int = setting(1024, ge=64, doc="address-space limit of a candidate process (MiB)")
    max_output_bytes: int = setting(
        65536, ge=1024, doc="cap on what a candidate may print or return per test")
    max_processes: int = setting(
        64, ge=1, doc="tasks (threads) a candidate may run: pids.max of its server's pids cgroup "
        "(plus the server's own 4); where the host has no writable pids cgroup the seccomp "
        "filter refuses clone, so a candidate runs single-threaded (RLIMIT_NPROC does not bind "
        "a uid mapped to root; docs/judge.md)")
    work_dir_mb: int = setting(
        64, ge=1, doc="size of the tmpfs a sandbox's candidates may write into (MiB, kernel "
        "boundary only)")
