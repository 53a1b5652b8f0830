"""The model zoo's registry: build a model by name + keyword arguments, and rebuild it later.

Every entry knows how to build its model, what kind of input it takes (flat vectors, images,
sequences, token ids) and which task it is trained for; the ``forgegrad`` command uses that to
fill in sizes from a data set (``in_features`` from the data, ``out_features`` from the classes).
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = ["ModelSpec", "register", "create", "available", "spec", "config_of", "from_config"]


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry.

    Attributes:
        name: the name passed to ``create``.
        builder: callable(**kwargs) -> Module.
        description: one line for ``forgegrad`` listings.
        input_kind: "flat" (N, F), "image" (N, C, H, W), "sequence" (N, T, F) or "tokens" (N, T) int64.
        task: "classify" (logits, cross-entropy), "vae" (returns (recon, mu, logvar)) or "lm".
        data_kwargs: callable(sample_shape, num_classes) -> kwargs inferred from a data set, which
            explicit kwargs override. sample_shape is one sample's shape (no batch dim).
        defaults: the builder's defaults recorded with a checkpoint (for display only).
    """

    name: str
    builder: Callable[..., Any]
    description: str
    input_kind: str = "flat"
    task: str = "classify"
    data_kwargs: Optional[Callable[[Tuple[int, ...], Optional[int]], Dict[str, Any]]] = None
    defaults: Dict[str, Any] = field(default_factory=dict)


_REGISTRY: Dict[str, ModelSpec] = {}


def register(spec_: ModelSpec) -> ModelSpec:
    if spec_.name in _REGISTRY:
        raise ValueError(f"model name {spec_.name!r} is already registered")
    _REGISTRY[spec_.name] = spec_
    return spec_


def available() -> List[str]:
    """The names ``create`` accepts, sorted."""
    return sorted(_REGISTRY)


def _unknown(name) -> ValueError:
    hint = difflib.get_close_matches(str(name), available(), n=1)
    did = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ValueError(f"unknown model {name!r}{did}; available models: {', '.join(available())}")


def spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; ValueError listing valid names when unknown."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise _unknown(name)
    return _REGISTRY[name]


def create(name: str, **kwargs):
    """Build zoo model ``name`` with ``kwargs``, e.g. ``create("mlp", in_features=64, out_features=10)``.

    Raises ValueError (unknown name, listing the valid ones; bad kwargs). The model remembers how it
    was built: see ``config_of``.
    """
    s = spec(name)
    try:
        inspect.signature(s.builder).bind(**kwargs)
    except TypeError as e:
        params = [p for p in inspect.signature(s.builder).parameters if p != "self"]
        raise ValueError(f"model {name!r}: {e}; its arguments are: {', '.join(params)}") from None
    model = s.builder(**kwargs)
    object.__setattr__(model, "zoo_config", {"name": name, "kwargs": _jsonable(kwargs)})
    return model


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return v.item()
        except (TypeError, ValueError):
            pass
    return v


def config_of(model) -> Dict[str, Any]:
    """{"name": ..., "kwargs": {...}} for a model built by ``create`` (JSON-serialisable)."""
    cfg = getattr(model, "zoo_config", None)
    if cfg is None:
        raise ValueError(f"{type(model).__name__} was not built by forgegrad.models.create, so it has no zoo config")
    return {"name": cfg["name"], "kwargs": dict(cfg["kwargs"])}


def from_config(config: Dict[str, Any]):
    """Rebuild a model from ``config_of``'s dict (weights are not part of it)."""
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError("model config must be a dict with a 'name' and optional 'kwargs'")
    name, kwargs = config["name"], config.get("kwargs") or {}
    # a config comes from a file (model.json): only zoo names, by plain lookup; nothing is imported
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise ValueError(f"model config must have a str 'name' and a dict 'kwargs', got {name!r} and {kwargs!r}")
    return create(name, **kwargs)
