"""The settings of ``forgegrad serve`` for a Hugging Face checkpoint directory (GenerationServeConfig: the flags of
the same names), checked, and what makes a directory one."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from .completion_request import MAX_ROWS_PER_REQUEST

WEIGHTS = ("float32", "bfloat16", "int8")


def is_checkpoint_dir(path: str) -> bool:
    """A Hugging Face checkpoint directory (config.json + safetensors), not a forgegrad checkpoint."""
    if not os.path.isdir(path) or os.path.isfile(os.path.join(path, "model.json")):
        return False
    if not os.path.isfile(os.path.join(path, "config.json")):
        return False
    return any(name.endswith(".safetensors") or name == "model.safetensors.index.json" for name in os.listdir(path))


@dataclass
class GenerationServeConfig:
    """Settings of ``forgegrad serve`` for a checkpoint directory (the flags of the same names)."""
    model_path: str
    weights: str = "float32"
    threads: Optional[int] = None
    max_queue: int = 512
    max_body_bytes: int = 16 * 1024 * 1024
    model_name: Optional[str] = None
    max_batch: int = 32  # completions decoded together (continuous batching); 1: one request at a time
    prefill_chunk: int = 128  # prompt tokens prefilled per call, one call between two decode steps; 0: all at once
    # the most MiB of prefilled keys/values kept for later prompts; 0: no prefix cache; None:
    # engine_setup.PREFIX_CACHE_MB where the model allows one (given, for a model that does not: a startup warning
    # says why it has no effect)
    prefix_cache_mb: Optional[float] = None
    prefix_block: int = 16  # tokens per block of the paged KV cache and the prefix cache (prompts reuse whole blocks)
    # the most MiB of the paged KV cache (rows' keys/values and the prefix cache's; an encoder-decoder's rows' decoder
    # and encoder keys/values); None: room for max(max_batch, MAX_N) rows of the whole context, so that any one request
    # fits (the pool's memory is committed only where written, so the size bounds, it does not take); given where
    # nothing is paged (one at a time): a startup warning
    kv_cache_mb: Optional[float] = None
    freeze: bool = True  # the model frozen in place once loaded (openai_routes.served_model); False: as loaded
    # the most decoding rows one request may ask for (prompts x n, x best_of where it is given); more is a 400 naming
    # prompt (or n / best_of): a 50,000-prompt request was accepted and decoded for hours, holding the queue
    max_rows_per_request: int = MAX_ROWS_PER_REQUEST

    def validate(self) -> "GenerationServeConfig":
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {self.weights!r}")
        for name in ("max_queue", "max_body_bytes", "max_batch", "max_rows_per_request"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.freeze, bool):
            raise ValueError(f"freeze must be True or False, got {self.freeze!r}")
        v = self.prefill_chunk
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"prefill_chunk must be an integer >= 0, got {v!r}")
        v = self.prefix_cache_mb
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0
                              or v == float("inf")):
            raise ValueError(f"prefix_cache_mb must be a number >= 0 (MiB; 0: no prefix cache), got {v!r}")
        v = self.prefix_block
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"prefix_block must be a positive integer, got {v!r}")
        v = self.kv_cache_mb
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0
                              or v == float("inf")):
            raise ValueError(f"kv_cache_mb must be a number > 0 (MiB) or None (room for max_batch rows of the whole "
                             f"context), got {v!r}")
        if not is_checkpoint_dir(self.model_path):
            raise ValueError(f"{self.model_path!r} is not a Hugging Face checkpoint directory (config.json and "
                             "safetensors weights)")
        return self
