# Two entry points a newcomer needs; each does its own set-up (venv, install, model, data).
SHELL := /bin/bash
VENV := .venv/bin
# QuixBugs: $CORAL_QUIXBUGS, else a sibling ../shared/quixbugs, else a clone under .cache/
QUIXBUGS := $(shell scripts/find_quixbugs.sh)
export CORAL_QUIXBUGS := $(QUIXBUGS)

.PHONY: setup run smoke test test-all bench

setup:              ## venv, packages, the sandbox boundary (bubblewrap), the model
	@scripts/setup_env.sh
	@$(VENV)/coral model pull

run: setup          ## the main job: local Ray, CPU, SmolLM2, real QuixBugs
	$(VENV)/coral run configs/local.yaml

smoke: setup        ## a one-minute run of the whole pipeline
	$(VENV)/coral run configs/smoke.yaml

test: setup         ## the fast test suite (what CI runs)
	$(VENV)/python -m pytest -q

test-all: setup     ## including the slow SmolLM2 training tests
	$(VENV)/python -m pytest -q -m ''

bench: setup        ## the judge's throughput and full-run time (JSON, with the isolation used)
	$(VENV)/python scripts/bench_judge.py
