# Two entry points a newcomer needs; each does its own set-up (venv, install, model, data).
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: setup data run smoke test test-all bench

setup:              ## venv, packages, the sandbox boundary (bubblewrap), the model
	@scripts/setup_env.sh
	@$(VENV)/coral model pull

# QuixBugs is looked for the way `coral` looks for it (coral data path): the config,
# $CORAL_QUIXBUGS, the copy `coral data pull` made, ../shared/quixbugs; else it is cloned once.
data: setup         ## QuixBugs: found, or cloned once into ~/.cache/coral/quixbugs
	@$(VENV)/coral data pull

run: data           ## the main job: local Ray, CPU, SmolLM2, real QuixBugs
	$(VENV)/coral run configs/local.yaml

smoke: data         ## a one-minute run of the whole pipeline
	$(VENV)/coral run configs/smoke.yaml

test: data          ## the fast test suite (what CI runs)
	$(VENV)/python -m pytest -q

test-all: data      ## including the slow SmolLM2 training tests
	$(VENV)/python -m pytest -q -m ''

bench: data         ## the judge's throughput and full-run time (JSON, with the isolation used)
	$(VENV)/python scripts/bench_judge.py
