"""Checkpoints written by ``forgegrad train``: weights (safetensors) plus a JSON file holding the zoo
model's name and kwargs, so ``eval`` and ``export`` can rebuild the model without any code."""
from __future__ import annotations

import json
import os

from .. import models
from .._atomic_io import atomic_write
from ._errors import CLIError, UsageError

WEIGHTS, META = "model.safetensors", "model.json"
FORMAT = "forgegrad-checkpoint/1"


def save_weights(model, path: str) -> None:
    """forgegrad.save: safetensors, written atomically."""
    from .. import serialization
    try:
        serialization.save(model.state_dict(), path)
    except ImportError as e:  # safetensors is an optional dependency; the message names the extra
        raise CLIError(str(e)) from None


def load_weights(path: str):
    from .. import serialization
    try:
        return serialization.load(path)
    except ImportError as e:
        raise CLIError(str(e)) from None


def save(model, meta: dict, out_dir: str) -> str:
    """Weights then metadata (both atomic); returns the metadata path."""
    os.makedirs(out_dir, exist_ok=True)
    save_weights(model, os.path.join(out_dir, WEIGHTS))
    return save_meta(dict(meta, **models.config_of(model)), out_dir)


def save_meta(meta: dict, out_dir: str) -> str:
    """The metadata file (atomic); ``meta`` names the zoo model ("name", "kwargs")."""
    meta = dict(meta, format=FORMAT, weights=WEIGHTS)
    path = os.path.join(out_dir, META)
    text = json.dumps(meta, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")), who="forgegrad train")
    return path


def resolve(path: str) -> str:
    """The metadata file for CHECKPOINT given as the output directory, the .json or the .safetensors."""
    if not os.path.exists(path):
        raise UsageError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        meta = os.path.join(path, META)
    elif path.endswith(".safetensors"):
        meta = os.path.splitext(path)[0] + ".json"
    else:
        meta = path
    if not os.path.isfile(meta):
        raise UsageError(f"{path} is not a forgegrad checkpoint: {meta} is missing (write one with `forgegrad train`)")
    return meta


def load(path: str):
    """(model in eval mode, metadata) from a checkpoint written by ``save``."""
    meta_path = resolve(path)
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read checkpoint metadata {meta_path}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "name" not in meta:
        raise UsageError(f"{meta_path} is not a forgegrad checkpoint (expected format {FORMAT!r})")
    try:
        model = models.from_config({"name": meta["name"], "kwargs": meta.get("kwargs", {})})
    except ValueError as e:
        raise UsageError(f"{meta_path}: {e}") from None
    weights = os.path.join(os.path.dirname(meta_path), meta.get("weights", WEIGHTS))
    if not os.path.isfile(weights):
        raise UsageError(f"checkpoint weights not found: {weights}")
    try:
        state = load_weights(weights)
        if meta.get("compression"):  # written by `forgegrad compress`: shrunk and/or quantized layers
            from .compress import rebuild
            model = rebuild(model, meta["compression"], state)
        model.load_state_dict(state)
    except CLIError:
        raise
    except Exception as e:  # a corrupt or mismatched file: say which and why, in one line
        msg = str(e).replace("\n", " ").replace("\t", "")
        raise CLIError(f"cannot load weights from {weights}: {msg}") from None
    model.eval()
    return model, meta
