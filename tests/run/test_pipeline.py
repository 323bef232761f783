"""Common random numbers: sample seeds depend on (run seed, problem, sample, stream) only."""

from __future__ import annotations

import numpy as np

from coral.config import SearchConfig
from coral.messages import AdapterRef
from coral.run.pipeline import (FINAL, HELDOUT, SEARCH, AdapterWork, Pass, Pipeline,
                                sample_seed)
from coral.run.pools import AdapterReady
from coral.run.progress import Progress
from coral.run.rundir import RunDir
from coral.search.genome import random_genome
from coral.search.knobs import knobs_for
from coral.config import KnobRanges


def test_sample_seed_is_stable_distinct_and_ignores_the_genome():
    assert sample_seed(0, "gcd", 0) == sample_seed(0, "gcd", 0)
    seeds = {sample_seed(s, p, i, stream) for s in (0, 1) for p in ("gcd", "hanoi")
             for i in range(3) for stream in (SEARCH, FINAL, HELDOUT)}
    assert len(seeds) == 2 * 2 * 3 * 3 and all(0 <= s < 2 ** 31 for s in seeds)


def test_two_genomes_draw_the_same_seed_for_the_same_problem_and_sample(tmp_path, quixbugs_dir):
    from coral.judge.quixbugs import load_problems, select

    problems = select(load_problems(quixbugs_dir), ["gcd", "hanoi"])
    rng = np.random.default_rng(0)
    genomes = [random_genome(SearchConfig(), rng, f"g{i}") for i in range(2)]
    rd = RunDir(tmp_path / "run").create()
    events = rd.open_events()
    pipe = Pipeline(pools=None, problems={p.name: p for p in problems}, run_seed=7,
                    adapter_key=lambda h: "k", knobs_of=lambda g: knobs_for(g, KnobRanges()),
                    events=events, progress=Progress(enabled=False), max_in_flight=4)
    todo = {g.id: [(p, i) for p in problems for i in range(3)] for g in genomes}
    ref = AdapterRef(key="k", uri="", checksum="")
    work = pipe._on_adapter(AdapterWork("k", genomes[0].heavy, tuple(genomes)),
                            AdapterReady(ref, "hit"), Pass(0, SEARCH, todo))
    events.close()
    by_genome = [{(r.problem, r.request_id.rsplit("/", 1)[1]): r.seed for r in w.requests}
                 for w in work]
    assert len(by_genome[0]) == 6 and by_genome[0] == by_genome[1]
    assert len(set(by_genome[0].values())) == 6           # distinct across (problem, sample)
    assert by_genome[0][("gcd", "2")] == sample_seed(7, "gcd", 2)
    assert work[0].requests[0].knobs != work[1].requests[0].knobs   # only the genome differs
