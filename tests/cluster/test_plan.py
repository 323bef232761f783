"""The plan (coral.run.plan) on every cluster definition, against the layouts that failed,
and the gate that `coral config check --plan`, `coral run`, `submit` and `modal run` share."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cluster.definitions import modal_cluster, read_cluster
from coral import config as cfgmod
from coral.cli import main
from coral.run.plan import (ClusterShape, NodeType, make_plan, model_shape, training_memory)

REPO = Path(__file__).resolve().parents[2]
CODELLAMA = REPO / "configs" / "cluster-codellama.yaml"
DEFINITIONS = ["cluster/ray-aws.yaml", "cluster/ray-gcp.yaml", "cluster/kuberay-rayjob.yaml",
               "modal"]


def codellama(*overrides: str) -> cfgmod.Config:
    return cfgmod.load(CODELLAMA, list(overrides))


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_codellama_fits_every_cluster_definition(definition):
    """Every actor placed on a node, its GPU memory under its share of a known card."""
    cluster = read_cluster(str(REPO / definition) if definition != "modal" else "modal")
    overrides = []
    if definition == "modal":
        from cluster.modal_app import modal_overrides
        overrides = modal_overrides()
    plan = make_plan(codellama(*overrides), cluster)
    assert plan["fits"], plan["problems"]
    assert all(n.card for n in cluster.nodes if n.gpus), "a GPU node type names no known card"
    assert plan["card_gib"] >= 40
    gpu_actors = [a for a in plan["actors"] if a["num_gpus"]]
    assert len(gpu_actors) == 6 and all(a["node"] for a in plan["actors"])
    assert all(0 < a["gpu_memory_gib"] <= a["budget_gib"] for a in gpu_actors)


def test_the_layouts_that_failed_do_not_fit():
    """Issue 22's failures, each caught with one line: Ray told 32 CPUs in a Modal container,
    an A10G (g5), a 40 GB A100 for generation at batch 32, training without checkpointing,
    and a model actor without a GPU on cuda."""
    small_modal = make_plan(codellama(), modal_cluster("H100:8", 1, 32))
    assert not small_modal["fits"]
    assert any("need 56 CPUs" in p for p in small_modal["problems"])
    for card, pools in (("A10G", {"ray.training_pool", "ray.generation_pool"}),
                        ("A100", {"ray.generation_pool"})):
        cluster = ClusterShape("test", (NodeType("gpu", 8, 1, 6, card),
                                        NodeType("cpu", 16, 0, 2)))
        plan = make_plan(codellama("ray.gpu_memory_gib=80"), cluster)
        assert {p.split(":")[0] for p in plan["problems"]} == pools, (card, plan["problems"])
    off = make_plan(codellama("training.gradient_checkpointing=off", "ray.gpu_memory_gib=80"))
    assert [p.split(":")[0] for p in off["problems"]] == ["ray.training_pool"]
    cpu_actor = make_plan(codellama("ray.generation_pool.num_gpus=0"))
    assert any("num_gpus is 0 but model.device is cuda" in p for p in cpu_actor["problems"])


def test_activation_estimates_reproduce_the_measured_layer():
    """At 8 x 768 tokens without checkpointing: LoRA q,v ~24 GiB, LoRA 7 modules ~51 GiB,
    DoRA 7 modules ~91 GiB (issue 22, one CodeLlama-width layer measured x 32)."""
    seven = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for modules, dora, gib in ((["q_proj", "v_proj"], False, 24), (seven, False, 51),
                               (seven, True, 91)):
        cfg = codellama(f"search.genes.target_modules=[{json.dumps(modules)}]",
                        f"search.genes.use_dora=[{str(dora).lower()}]")
        mem = training_memory(cfg, model_shape(cfg.model))
        assert mem["activations_full"] == pytest.approx(gib, rel=0.05), (modules, dora)
        assert mem["activations_checkpointed"] < gib / 8


def test_model_shape_counts_the_real_parameters():
    """The shape's parameter count is the model's: the tiny model built here, CodeLlama-7B."""
    from coral.model.loading import tiny_model_dir
    from safetensors import safe_open

    folder = tiny_model_dir()
    shape = model_shape(cfgmod.ModelConfig(base=str(folder)))
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        stored = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    assert shape.params() == stored
    assert model_shape(codellama().model).params() == pytest.approx(6.74e9, rel=0.005)


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def test_cli_plan_json_and_exit_status(capsys):
    """--plan --json: fits and one entry per actor; the failing variant exits 1 with lines."""
    assert main(["config", "check", str(CODELLAMA), "--plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] is True and len(plan["actors"]) == 2 + 4 + 32
    assert main(["config", "check", str(CODELLAMA), "--plan", "--json", "--set",
                 "training.gradient_checkpointing=off", "--set", "training.batch_size=64"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out)["fits"] is False
    assert "ray.training_pool: each actor needs" in out.err


def test_starts_are_gated_by_the_plan(capsys, tmp_path):
    """coral run, submit and modal run refuse a layout that does not fit, before any start."""
    smoke = str(REPO / "configs" / "smoke.yaml")
    assert main(["run", smoke, "--set", "ray.judge_pool.size=64",
                 "--set", f"run.runs_dir={tmp_path}"]) == 1
    assert "the pools need" in capsys.readouterr().err and not any(tmp_path.iterdir())
    assert main(["submit", str(CODELLAMA), "--address", "http://127.0.0.1:1",
                 "--set", "training.gradient_checkpointing=off"]) == 1
    assert "ray.training_pool" in capsys.readouterr().err
    pytest.importorskip("modal")
    assert main(["modal", "run", str(CODELLAMA), "--gpu", "A10G:8", "--dry-run"]) == 1
    assert "does not fit" in capsys.readouterr().err
    assert main(["modal", "run", str(CODELLAMA), "--dry-run"]) == 0
    assert "-m cluster.modal_app" in capsys.readouterr().out


def test_plan_is_pure():
    """No Ray and no torch: the plan runs where the CLI validates a config."""
    import subprocess
    import sys

    code = ("import sys; from coral import config as c; from coral.run.plan import make_plan; "
            f"make_plan(c.load({str(CODELLAMA)!r})); "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_shape_source_prefers_the_local_config(tmp_path):
    """A folder's config.json wins; a hub id without a hub uses the known-shape table."""
    doc = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(doc))
    shape = model_shape(cfgmod.ModelConfig(base=str(tmp_path)))
    assert (shape.hidden, shape.kv_heads, shape.vocab) == (64, 2, 100)
    hub = model_shape(dataclasses.replace(codellama().model))
    assert "KNOWN_SHAPES" in hub.source or "cache" in hub.source
    assert model_shape(cfgmod.ModelConfig(base="someone/unknown-model")) is None
