"""Reading and writing Hugging Face checkpoint directories: ``config.json`` + safetensors weights.

A directory holds ``model.safetensors``, or shards listed by ``model.safetensors.index.json``
(``{"weight_map": {tensor name: shard file}}``). Weights are read with forgegrad's bounded
safetensors reader (header validated before any data is read; bfloat16 and float16 widened to
float32). Nothing is ever unpickled: a directory with only ``pytorch_model.bin`` gets an error that
says how to convert it.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import Dict, Mapping, Optional

import numpy as np

from ... import _safetensors_read as _reader
from ..._atomic_io import atomic_write

__all__ = ["CheckpointError", "read_config", "read_weights", "write_checkpoint"]

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
# what a directory from transformers may hold instead of safetensors: pickle files we never open
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names the file and the problem."""


def _check_dir(path) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"from_pretrained: no such directory: {path!r}")
    if not os.path.isdir(path):
        raise CheckpointError(f"from_pretrained: {path!r} is a file; expected a checkpoint directory holding "
                              f"{CONFIG} and {SINGLE} (as written by transformers' save_pretrained)")
    return path


def read_config(path) -> dict:
    path = _check_dir(path)
    cfg_path = os.path.join(path, CONFIG)
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"from_pretrained: {path!r} has no {CONFIG}; a Hugging Face checkpoint directory "
                              "holds config.json and model.safetensors")
    return read_json_object(cfg_path, "from_pretrained")


def read_json_object(file: str, who: str) -> dict:
    """The JSON object in ``file``, or CheckpointError naming the file (``who``: the caller, for the message)."""
    try:
        with open(file, encoding="utf-8") as f:
            obj = json.load(f)
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{who}: {file!r} is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{who}: {file!r} must hold a JSON object, got {type(obj).__name__}")
    return obj


def is_bfloat16(a: np.ndarray) -> bool:
    """Whether ``a`` holds bfloat16 bit patterns as read with ``read_weights(keep_bfloat16=True)``."""
    return a.dtype == np.uint16 and (a.dtype.metadata or {}).get("safetensors") == "BF16"


def as_float32(a: np.ndarray) -> np.ndarray:
    """A checkpoint tensor as float32: bfloat16 bit patterns widened (exact), other types converted."""
    if is_bfloat16(a):
        return _reader.bfloat16_to_float32(a)
    return np.asarray(a, dtype=np.float32)


def _read_file(file_path: str, who: str, keep_bfloat16: bool = False) -> Dict[str, np.ndarray]:
    f, size = _reader.open_regular(file_path, who)
    with f:
        try:
            _, entries = _reader.read_header(f, size)
            arrays = _reader.read_tensors(f, entries, widen_bfloat16=not keep_bfloat16)
        except _reader.CorruptFile as e:
            raise CheckpointError(f"{who}: {file_path!r} is not a valid safetensors file (truncated or "
                                  f"corrupt?): {e}") from None
    return {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in arrays.items()}


def read_weights(path, keep_bfloat16: bool = False) -> "OrderedDict[str, np.ndarray]":
    """Every tensor of the checkpoint directory, by its name in the file (float16 -> float32; bfloat16 ->
    float32, or kept as bit patterns with ``keep_bfloat16``: see ``is_bfloat16``)."""
    path = _check_dir(path)
    who = "from_pretrained"
    single, index = os.path.join(path, SINGLE), os.path.join(path, INDEX)
    if os.path.isfile(single):
        return OrderedDict(sorted(_read_file(single, who, keep_bfloat16).items()))
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f).get("weight_map")
        except (UnicodeDecodeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{who}: {index!r} is not a valid shard index: {e}") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{who}: {index!r} must hold a 'weight_map' object of tensor name -> shard file")
        out: Dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            if os.path.basename(shard) != shard:  # the index names files inside the directory, nothing else
                raise CheckpointError(f"{who}: {index!r} names shard {shard!r} outside the checkpoint directory")
            shard_path = os.path.join(path, shard)
            if not os.path.isfile(shard_path):
                raise CheckpointError(f"{who}: shard {shard!r} listed in {INDEX} is missing from {path!r}")
            out.update(_read_file(shard_path, who, keep_bfloat16))
        missing = sorted(set(weight_map) - set(out))
        if missing:
            raise CheckpointError(f"{who}: tensors listed in {INDEX} are not in their shards: {missing[:5]}")
        return OrderedDict(sorted(out.items()))
    pickled = [p for p in PICKLED if os.path.exists(os.path.join(path, p))]
    if pickled:
        raise CheckpointError(
            f"{who}: {path!r} holds only {pickled[0]}, a pickle file, which forgegrad never loads (loading a pickle "
            "can run arbitrary code). Convert it once with transformers: "
            "`AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)` writes model.safetensors.")
    raise CheckpointError(f"{who}: {path!r} has neither {SINGLE} nor {INDEX}")


def write_checkpoint(path, config: Mapping, tensors: Mapping[str, np.ndarray],
                     generation_config: Optional[Mapping] = None) -> None:
    """Write ``config.json`` and ``model.safetensors`` (each atomically) into the directory ``path``, and
    ``generation_config.json`` when ``generation_config`` is given (generate's defaults travel with the model)."""
    from ...serialization import _safetensors
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in tensors.items()}  # 0-d stays 0-d
    _, stnp = _safetensors()
    payload = stnp.save(arrays, metadata={"format": "pt"})  # transformers checks the "format" entry
    text = json.dumps(dict(config), indent=2, sort_keys=True) + "\n"
    atomic_write(os.path.join(path, SINGLE), lambda f: f.write(payload), who="save_pretrained")
    atomic_write(os.path.join(path, CONFIG), lambda f: f.write(text.encode("utf-8")), who="save_pretrained")
    if generation_config is not None:
        write_generation_config(path, generation_config, "save_pretrained")


def write_generation_config(directory, generation_config: Mapping, who: str) -> str:
    """``generation_config`` written (atomically) as ``directory``/generation_config.json; returns its path."""
    file = os.path.join(os.fspath(directory), "generation_config.json")
    gen = json.dumps(dict(generation_config), indent=2, sort_keys=True) + "\n"
    atomic_write(file, lambda f: f.write(gen.encode("utf-8")), who=who)
    return file
