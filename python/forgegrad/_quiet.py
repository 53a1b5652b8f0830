"""numpy's floating-point error state while forgegrad's kernels run: quiet, as torch's.

torch gives log(-1) = nan, 1 / 0 = inf, exp(1000) = inf and inf - inf = nan without a word; numpy warns
("RuntimeWarning: invalid value encountered in ...") and raises under ``np.seterr(all="raise")`` or
``-W error``. ``Function.apply`` runs every op's forward with numpy's errors ignored (the backward engine
does the same for backward), and the caller's own numpy state is back when the op returns.

On numpy 2 the state is a context variable: setting it costs ~0.1 us, against ~2 us for ``np.errstate``
(which builds its state on every entry), so the op dispatch path can afford it. numpy 1 falls back to
``np.errstate``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["quiet", "loud", "QUIET"]

try:  # numpy >= 2: the error state is this context variable (np.errstate sets it the same way)
    from numpy._core._ufunc_config import _extobj_contextvar as _state

    with np.errstate(all="ignore"):
        QUIET = _state.get()
    quiet = _state.set  # quiet(QUIET) -> token
    loud = _state.reset  # loud(token): the state before
except (ImportError, AttributeError):  # pragma: no cover - numpy 1
    QUIET = None

    def quiet(_):
        e = np.errstate(all="ignore")
        e.__enter__()
        return e

    def loud(e):
        e.__exit__(None, None, None)
