"""`coral model pull` converts the embedded SmolLM2 once; `coral model info` shows a base model."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `model` command."""
    p = sub.add_parser("model", help="prepare or inspect base models (offline)")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    pull = msub.add_parser("pull", help="convert the embedded SmolLM2 GGUF into the cache (once)")
    pull.add_argument("--cache-dir", default=None, help="default: $CORAL_CACHE or ~/.cache/coral")
    pull.add_argument("--tiny", action="store_true", help="also build the tiny test model")
    pull.set_defaults(func=_pull)
    info = msub.add_parser("info", help="resolve model.base of a config and print it")
    info.add_argument("config")
    info.set_defaults(func=_info)


def _pull(args: argparse.Namespace) -> int:
    """Convert (if needed) and print the folders."""
    from coral.model import loading as model
    out = {"smollm2": str(model.pull_embedded(args.cache_dir))}
    if args.tiny:
        out["tiny"] = str(model.tiny_model_dir(args.cache_dir))
    print(json.dumps(out))
    return 0


def _info(args: argparse.Namespace) -> int:
    """Print the resolved base model spec of a config."""
    from coral import config
    from coral.model import loading as model

    cfg = config.load(args.config)
    spec = model.resolve(cfg.model)
    device, dtype = model.device_and_dtype(cfg.model)
    print(json.dumps({"name": spec.name, "path": spec.path, "gguf_file": spec.gguf_file,
                      "device": device, "dtype": str(dtype)}))
    return 0
