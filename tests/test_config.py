"""Config loading: every shipped file validates; every error message is pinned."""

from __future__ import annotations

from pathlib import Path

import pytest

from coral import config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_directory_is_not_empty():
    names = {p.name for p in CONFIGS}
    assert {"smoke.yaml", "local.yaml", "cluster-codellama.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path):
    cfg = config.load(path)
    assert cfg.source == str(path)
    assert config.from_dict(config.to_dict(cfg)) == cfg


def _write(tmp_path, text):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("search:\n  population_size: 0\n", r"x\.yaml: search\.population_size: must be >= 2, got 0$"),
    ("search:\n  popsize: 3\n", r"x\.yaml: search\.popsize: unknown key \(allowed: strategy, "),
    ("bogus: 1\n", r"x\.yaml: bogus: unknown key"),
    ("search:\n  generations: two\n", r"search\.generations: must be an integer, got 'two'"),
    ("run:\n  seed: -1\n", r"run\.seed: must be >= 0, got -1"),
    ("search:\n  mutation_rate: 1.5\n", r"search\.mutation_rate: must be <= 1, got 1\.5"),
    ("search:\n  genes:\n    r: []\n", r"search\.genes\.r: must not be empty"),
    ("search:\n  genes:\n    use_dora: [yes, 3]\n", r"search\.genes\.use_dora\[1\]: must be true or false, got 3"),
    ("knobs:\n  top_p: [0.5, 1.5]\n", r"knobs\.top_p: must lie in \(0, 1\], got \[0\.5, 1\.5\]"),
    ("knobs:\n  temperature: [1.0, 0.5]\n", r"knobs\.temperature: low must be <= high, got \[1\.0, 0\.5\]"),
    ("knobs:\n  top_k: 5\n", r"knobs\.top_k: must be \[low, high\], got 5"),
    ("search:\n  ca:\n    steps_min: 9\n    steps_max: 3\n", r"search\.ca\.steps_min: must be <= steps_max \(3\), got 9"),
    ("search: [1, 2]\n", r"search: must be a mapping, got list"),
    ("model:\n  dtype: fp8\n", r"model\.dtype: must be one of"),
    ("ray:\n  judge_pool: {size: 0}\n", r"ray\.judge_pool\.size: must be >= 1, got 0"),
    ("search: {\n", r"x\.yaml: invalid YAML: "),
])
def test_config_errors_name_file_and_key(tmp_path, text, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(_write(tmp_path, text))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(config.ConfigError, match=r"nope\.yaml: cannot read"):
        config.load(tmp_path / "nope.yaml")


def test_overrides_are_validated_like_the_file(tmp_path):
    path = _write(tmp_path, "search:\n  generations: 2\n")
    cfg = config.load(path, ["search.generations=5", "knobs.top_k=[1, 10]"])
    assert cfg.search.generations == 5
    assert cfg.knobs.top_k == config.Range(1.0, 10.0)
    with pytest.raises(config.ConfigError, match=r"search\.generations: must be >= 1, got 0"):
        config.load(path, ["search.generations=0"])
    with pytest.raises(config.ConfigError, match=r"--set search: expected KEY\.PATH=VALUE"):
        config.load(path, ["search"])


def test_config_is_frozen():
    cfg = config.Config()
    with pytest.raises(Exception):
        cfg.run.seed = 3  # type: ignore[misc]


def test_cli_config_check(capsys):
    from coral.cli import main

    assert main(["config", "check", *map(str, CONFIGS)]) == 0
    assert capsys.readouterr().out.count(": ok") == len(CONFIGS)


def _sections(cls=config.Config):
    """Every section dataclass reachable from `cls` (Range is a value, not a section)."""
    import dataclasses
    import typing
    yield cls
    for tp in typing.get_type_hints(cls).values():
        if dataclasses.is_dataclass(tp) and tp is not config.Range:
            yield from _sections(tp)


def test_every_key_is_declared_with_a_doc():
    import dataclasses
    undocumented = [f"{cls.__name__}.{f.name}" for cls in _sections()
                    for f in dataclasses.fields(cls)
                    if f.name != "source" and not f.metadata.get("doc")]
    assert undocumented == []


def test_config_show_doc_lists_every_key(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "coral", "config", "show", "--doc"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    keys = [key for key, *_ in config.describe()]
    assert len(keys) > 50
    listed = {line.split()[0] for line in out.stdout.splitlines() if line and not line[0].isspace()}
    assert listed == set(keys)


def test_describe_shows_a_file_values_and_nested_defaults():
    rows = {key: (value, doc) for key, _, value, doc in config.describe(
        config.from_dict({"search": {"population_size": 5}}))}
    assert rows["search.population_size"][0] == 5
    assert rows["ray.judge_pool.size"][0] == 2          # the section's own default, not PoolConfig's
    assert "genomes" in rows["search.population_size"][1]
