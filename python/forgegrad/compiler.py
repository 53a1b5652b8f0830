"""torch.compiler: ``disable``, ``is_compiling``, ``is_dynamo_compiling``, ``reset``, ``list_backends``
(see forgegrad._compile for what ``forgegrad.compile`` does)."""
from ._compile import disable, is_compiling, list_backends, reset

is_dynamo_compiling = is_compiling

__all__ = ["disable", "is_compiling", "is_dynamo_compiling", "list_backends", "reset"]
