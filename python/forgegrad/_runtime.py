"""Runtime settings shared by every kernel: SIMD path and thread count."""
from __future__ import annotations

from . import _C

__all__ = ["cpu_info", "set_num_threads", "get_num_threads", "set_simd", "get_simd"]


def cpu_info() -> dict:
    """Which SIMD path the kernels use and why.

    Returns a dict with ``detected_isa`` (best the CPU supports), ``active_isa`` (the one in use:
    lowered by the ``FORGEGRAD_SIMD`` environment variable or :func:`set_simd`), ``num_threads``,
    ``cuda_built``, ``avx512_bf16`` (whether the CPU has it) and ``bf16_gemm`` (the path bfloat16
    linear / matmul take: ``"avx512_bf16"``, vdpbf16ps, or ``"float32"``, the widened operands).
    """
    return dict(_C.runtime.cpu_info())


def set_simd(name: str) -> None:
    """Force the SIMD path: ``"avx512"``, ``"avx2"`` or ``"scalar"``.

    Raises ValueError for an unknown name or one the CPU does not support.
    """
    if not isinstance(name, str):
        raise TypeError(f"set_simd: name must be a str, got {type(name).__name__}")
    _C.runtime.set_isa(name)


def get_simd() -> str:
    return _C.runtime.get_isa()


def set_num_threads(n: int) -> None:
    """Threads used by forgegrad's kernels (default: the machine's cores, or FORGEGRAD_NUM_THREADS).

    Results do not depend on this number: every kernel gives bit-identical output for any count.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _C.runtime.set_num_threads(n)


def get_num_threads() -> int:
    return _C.runtime.get_num_threads()
