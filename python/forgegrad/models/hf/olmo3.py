"""OLMo 3 (transformers' ``Olmo3ForCausalLM``): OLMo 2's layers (models/hf/olmo2.py) with sliding-window attention
on the layers ``layer_types`` marks "sliding_attention" (by default three layers in four: every fourth one is
global), and a rotary embedding per kind of layer: the rope scaling (``rope_scaling``, or ``rope_parameters``'
"full_attention" entry) applies to the global layers only, the sliding ones keep the plain rope of the same base.

The parameter names are OLMo 2's, so the checkpoint loads and saves without renaming. The windows and the per-layer
ropes run through LlamaForCausalLM's machinery (as Qwen2's windows and Gemma 3's local ropes do): the forward, the KV
cache, generate, beam search, ``export_with_past`` and the lean decode step and prefill (which masks each layer's
window), so generate and the batched and paged serving engines take it."""
from __future__ import annotations

from typing import List, Optional, Tuple

from ._layers import RotaryEmbedding
from ._rope import rope_from_config
from .llama import Qwen2ForCausalLM
from .olmo2 import Olmo2ForCausalLM

__all__ = ["Olmo3ForCausalLM"]

_THETA = 500000.0  # transformers' Olmo3Config default rope base


def olmo3_rope_settings(cfg: dict) -> Tuple[dict, dict]:
    """The rope settings of the global and of the sliding layers: transformers 5's ``rope_parameters`` per layer
    type, or (older configs) ``rope_theta`` for both and ``rope_scaling`` for the global layers only."""
    params = cfg.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        full, local = params.get("full_attention") or {}, params.get("sliding_attention") or {}
        theta = full.get("rope_theta", local.get("rope_theta", cfg.get("rope_theta", _THETA)))
        return {"rope_theta": theta, **full}, {"rope_theta": local.get("rope_theta", theta), **local}
    theta = params.get("rope_theta", cfg.get("rope_theta", _THETA))
    scaling = dict(cfg.get("rope_scaling") or params)
    return {**scaling, "rope_theta": theta}, {"rope_type": "default", "rope_theta": theta}


class Olmo3ForCausalLM(Olmo2ForCausalLM):
    """OLMo 3 with its LM head; ``forward`` as LlamaForCausalLM's."""

    architecture = "Olmo3ForCausalLM"
    model_type = "olmo3"

    def __init__(self, config: dict):
        super().__init__(config)
        full, local = olmo3_rope_settings(self.config)
        c = {k: v for k, v in self.config.items() if k not in ("rope_parameters", "rope_scaling", "rope_theta")}
        self.rotary = rope_from_config({**c, "rope_parameters": full}, self.head_dim, self.max_positions)
        self.rotary_local = rope_from_config({**c, "rope_parameters": local}, self.head_dim, self.max_positions)

    @property
    def max_positions(self) -> int:
        """LlamaForCausalLM's, reading the global layers' rope (a dynamic rope there runs past the trained context)."""
        full, _ = olmo3_rope_settings(self.config)
        n = self.config.get("max_position_embeddings", 2048)
        factor = full.get("factor")
        if full.get("rope_type", full.get("type")) == "dynamic" and isinstance(factor, (int, float)) and factor > 1:
            return int(n * factor)
        return n

    def layer_rotary(self, i: int) -> RotaryEmbedding:
        return self.rotary_local if self.sliding_windows[i] is not None else self.rotary

    def _sliding_windows(self, cfg: dict) -> List[Optional[int]]:
        if cfg.get("layer_types") is None:  # transformers' default pattern: every fourth layer is global
            cfg = {**cfg, "layer_types": ["full_attention" if (i + 1) % 4 == 0 else "sliding_attention"
                                          for i in range(cfg["num_hidden_layers"])]}
        if "sliding_window" not in cfg:  # transformers' Olmo3Config default
            cfg = {**cfg, "sliding_window": 4096}
        # Qwen2's reading of layer_types and sliding_window (checked, one window per "sliding_attention" layer)
        return Qwen2ForCausalLM._sliding_windows(self, cfg)
