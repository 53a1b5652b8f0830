"""torch._dynamo's names that ported scripts call: ``reset``, ``config.suppress_errors`` (and the recompile
limits), ``disable``, ``is_compiling``, ``list_backends``. forgegrad.compile captures no graph, so the config
values are kept for scripts that set or read them and change nothing."""
import types

from ._compile import disable, is_compiling, list_backends, reset

config = types.SimpleNamespace(suppress_errors=False, verbose=False, cache_size_limit=8, recompile_limit=8,
                               accumulated_cache_size_limit=256, accumulated_recompile_limit=256,
                               capture_scalar_outputs=False, automatic_dynamic_shapes=True)

__all__ = ["config", "disable", "is_compiling", "list_backends", "reset"]
