"""Adapter training on the tiny random LLaMA: LoRA and DoRA learn, metadata, clean base."""

from __future__ import annotations

import json

import pytest
import torch

from coral.config import ModelConfig, TrainingConfig
from coral.search.genome import HeavyGenes
from coral.adapters.store import DirectoryStore, checksum_dir
from coral.model.training import Trainer, lora_config, train_seed

# Few short steps at a high learning rate: enough for the loss of a random model to drop
# clearly, small enough that the file runs in seconds on 2 cores.
TCFG = TrainingConfig(batch_size=2, max_length=128, examples=16)
LORA = HeavyGenes(r=4, lora_alpha=8.0, lora_dropout=0.0, target_modules=("q_proj", "v_proj"),
                  use_dora=False, steps=6, learning_rate=2e-2)
DORA = HeavyGenes(r=8, lora_alpha=16.0, lora_dropout=0.05,
                  target_modules=("q_proj", "k_proj", "v_proj", "o_proj"), use_dora=True,
                  steps=6, learning_rate=2e-2)


@pytest.fixture(scope="module")
def trainer():
    """One resident tiny base model for the whole module."""
    return Trainer(ModelConfig(base="tiny"), TCFG)


@pytest.fixture(scope="module")
def base_state(trainer):
    """A copy of the base weights before any training."""
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_lora_config_honours_genes():
    cfg = lora_config(DORA)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.use_dora) == (8, 16.0, 0.05, True)
    assert sorted(cfg.target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert cfg.task_type == "CAUSAL_LM"


def test_train_seed_is_stable():
    assert train_seed("abc", 0) == train_seed("abc", 0) != train_seed("abc", 1)


@pytest.fixture(scope="module")
def trained(trainer, base_state, tmp_path_factory):
    """LoRA and DoRA adapters trained once into one store: {name: (store, genes, ref)}."""
    store = DirectoryStore(tmp_path_factory.mktemp("adapters"))
    return {name: (store, genes, trainer.train_into(store, genes, trainer.key(genes)))
            for name, genes in (("lora", LORA), ("dora", DORA))}


@pytest.mark.parametrize("name", ["lora", "dora"])
def test_adapter_learns_and_meta_is_complete(trainer, trained, name):
    store, genes, ref = trained[name]
    key = ref.key
    meta = json.loads((store.local_path(key) / "coral.json").read_text())
    # learning: the fixed probe batch's loss drops, and so does the running loss
    assert meta["probe_loss_after"] < meta["probe_loss_before"] - 0.05
    assert sum(meta["loss"][-3:]) / 3 < meta["loss"][0]
    assert len(meta["loss"]) == LORA.steps and meta["learning_rate"] == LORA.learning_rate
    assert meta["genes"] == genes.canonical() and meta["base_model"] == trainer.spec.name
    assert meta["data_version"] == trainer.data_version and meta["seconds"] > 0
    assert meta["checksum"] == ref.checksum == checksum_dir(store.local_path(key))
    assert ref.use_dora is genes.use_dora and store.verify(key)
    adapter_cfg = json.loads((store.local_path(key) / "adapter_config.json").read_text())
    assert adapter_cfg["use_dora"] is genes.use_dora and adapter_cfg["r"] == genes.r


def test_base_model_is_bare_and_unchanged_after_training(trainer, base_state, trained):
    state = trainer.model.state_dict()
    assert set(state) == set(base_state)
    assert all(torch.equal(state[k], base_state[k]) for k in base_state)
    assert not hasattr(trainer.model, "peft_config")


def test_same_key_trains_the_same_adapter(trainer, trained, tmp_path):
    _, _, first = trained["lora"]
    again = trainer.train_into(DirectoryStore(tmp_path), LORA, trainer.key(LORA))
    assert again.checksum == first.checksum


def test_stored_adapter_loads_with_peft(trainer, trained):
    from peft import PeftModel

    _, _, ref = trained["dora"]
    wrapped = PeftModel.from_pretrained(trainer.model, ref.uri)
    try:
        ids = torch.tensor([[1, 2, 3, 4]])
        with torch.no_grad():
            with_adapter = wrapped(input_ids=ids).logits
            with wrapped.disable_adapter():
                without = wrapped(input_ids=ids).logits
        assert not torch.allclose(with_adapter, without)
    finally:
        trainer.model = wrapped.unload()


def test_key_for_other_data_is_refused(trainer):
    wrong = LORA.key(trainer.spec.name, "some-other-data-version")
    with pytest.raises(ValueError, match="does not match"):
        trainer.train(LORA, wrong)


def test_unknown_target_module_raises_and_leaves_base_usable(trainer, base_state):
    bad = HeavyGenes(r=4, lora_alpha=8.0, lora_dropout=0.0, target_modules=("no_such_proj",),
                     use_dora=False)
    with pytest.raises(ValueError):
        trainer.train(bad, trainer.key(bad))
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], base_state[k]) for k in base_state)


def test_gradient_checkpointing_is_on_for_cuda_configs():
    """auto: on for cuda (every config that trains on a GPU), off on cpu; on/off as written."""
    from pathlib import Path

    from coral import config as cfgmod

    configs = Path(__file__).resolve().parents[2] / "configs"
    cuda = [p for p in sorted(configs.glob("*.yaml")) if cfgmod.load(p).model.device == "cuda"]
    assert {p.name for p in cuda} >= {"cluster-codellama.yaml", "gpu-check.yaml"}
    for path in cuda:
        assert cfgmod.load(path).training.checkpointing("cuda"), path.name
    assert not TrainingConfig().checkpointing("cpu")
    # YAML 1.1 reads a bare off as false: the loader gives it back its word
    off = cfgmod.load(configs / "cluster-codellama.yaml", ["training.gradient_checkpointing=off"])
    assert off.training.gradient_checkpointing == "off" and not off.training.checkpointing("cuda")
    assert TrainingConfig(gradient_checkpointing="on").checkpointing("cpu")


def test_checkpointed_training_gives_the_same_adapter(trainer, trained, base_state, tmp_path):
    """Recomputing activations changes memory, not results: same losses as without, the flag
    in the metadata, and the base model bare, unchanged and without checkpointing after."""
    import dataclasses

    store, genes, ref = trained["lora"]
    plain = json.loads((store.local_path(ref.key) / "coral.json").read_text())
    on = Trainer(trainer.model_cfg, dataclasses.replace(TCFG, gradient_checkpointing="on"),
                 loaded=(trainer.model, trainer.tokenizer, trainer.spec))
    out, meta = on.train(genes, ref.key, tmp_path / "ckpt")
    assert meta["gradient_checkpointing"] is True and plain["gradient_checkpointing"] is False
    assert meta["loss"] == pytest.approx(plain["loss"], rel=1e-4, abs=1e-5)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in on.model.modules())
    assert not getattr(on.model, "_require_grads_hooks", None)
    for name, value in on.model.state_dict().items():
        assert torch.equal(value, base_state[name]), name
