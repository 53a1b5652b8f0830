"""The MPI world: init, rank/size, and collectives on numpy arrays and Tensors (through mpi4py).

Collectives hand the arrays' own memory to mpi4py's buffer-protocol (uppercase) calls: no pickling
and no staging copies. ``allreduce`` and ``broadcast`` work in place, like torch.distributed;
``allgather`` and ``reduce_scatter`` return a new array (of the input's kind: Tensor in, Tensor out).

mpi4py (and an MPI library, e.g. the ``mpich`` wheel) is optional: ``pip install "forgegrad[mpi]"``.
Importing this module does not import mpi4py; ``init()`` does.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from typing import Optional

import numpy as np

from ..tensor import Tensor

__all__ = ["is_available", "is_initialized", "init", "rank", "size", "local_rank", "local_size", "barrier",
           "allreduce", "broadcast", "allgather", "reduce_scatter", "allgather_object", "broadcast_object",
           "abort", "is_distributed"]

_MISSING = ('forgegrad.distributed needs mpi4py and an MPI library; install them with pip install "forgegrad[mpi]" '
            '(mpi4py plus the mpich wheel)')

_state = {"comm": None, "local": None, "MPI": None}


def is_available() -> bool:
    """Whether mpi4py can be imported (without importing it: that would start MPI)."""
    return importlib.util.find_spec("mpi4py") is not None


def is_initialized() -> bool:
    return _state["comm"] is not None


def is_distributed() -> bool:
    """True inside an initialised job of more than one rank (what fit and the CLI test)."""
    comm = _state["comm"]
    return comm is not None and comm.Get_size() > 1


def _mpi():
    mpi = _state["MPI"]
    if mpi is None:
        if not is_available():
            raise ImportError(_MISSING)
        try:
            from mpi4py import MPI
        except ImportError as e:  # mpi4py present but its MPI library is not
            raise ImportError(f"{_MISSING} ({e})") from e
        mpi = _state["MPI"] = MPI
    return mpi


# MPI_Abort tears the job down at once, and mpiexec can drop what a rank wrote to its pipes just before
# (a CI run lost the last line of a traceback this way): give it a moment to forward the message.
_DRAIN_BEFORE_ABORT_S = 0.3


def _abort(comm, code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken: nothing more can reach the user through it
            pass
    time.sleep(_DRAIN_BEFORE_ABORT_S)
    comm.Abort(code)


def _abort_on_uncaught(exc_type, exc, tb) -> None:
    """An uncaught exception on one rank aborts the whole job: the others would otherwise wait
    forever in their next collective. The traceback is printed first, with the rank."""
    sys.__excepthook__(exc_type, exc, tb)
    comm = _state["comm"]
    if comm is not None and comm.Get_size() > 1 and exc_type is not KeyboardInterrupt:
        print(f"forgegrad.distributed: rank {comm.Get_rank()} failed with {exc_type.__name__}; aborting the "
              f"job ({comm.Get_size()} ranks)", file=sys.stderr, flush=True)
        _abort(comm, 1)


_real_exit = sys.exit


def _exit_or_abort(code=None):
    """sys.exit under a multi-rank job: a failure exit (code not 0/None) on one rank aborts the job,
    since the other ranks would wait forever for it in a collective (and MPI_Finalize would wait for
    them). A success exit is left alone."""
    comm = _state["comm"]
    if code not in (None, 0) and comm is not None and comm.Get_size() > 1:
        if not isinstance(code, int):
            print(code, file=sys.stderr)
        print(f"forgegrad.distributed: rank {comm.Get_rank()} exited with status {code!r}; aborting the job "
              f"({comm.Get_size()} ranks)", file=sys.stderr, flush=True)
        _abort(comm, code if isinstance(code, int) else 1)
    _real_exit(code)


def init() -> None:
    """Start MPI (idempotent). Under ``mpiexec -n N`` every process becomes one rank of N; a plain
    ``python`` process is a world of one rank.

    From here on an uncaught exception, or ``sys.exit`` with a failure status, on any rank aborts the
    whole job (MPI_Abort) instead of leaving the other ranks blocked in a collective. (A bare
    ``raise SystemExit(1)`` is not seen: use sys.exit or forgegrad.distributed.abort.)
    """
    if _state["comm"] is not None:
        return
    MPI = _mpi()
    if not MPI.Is_initialized():
        MPI.Init_thread()
    comm = MPI.COMM_WORLD
    # MPI's default error handler on COMM_WORLD aborts on communication errors (a dead peer), which
    # is what we want: a clear message on stderr and the job ending, never a hang.
    _state["comm"] = comm
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    _state["local"] = (local.Get_rank(), local.Get_size())
    local.Free()
    if comm.Get_size() > 1:
        sys.excepthook = _abort_on_uncaught
        sys.exit = _exit_or_abort


def _comm():
    comm = _state["comm"]
    if comm is None:
        raise RuntimeError("forgegrad.distributed is not initialised: call forgegrad.distributed.init() first")
    return comm


def rank() -> int:
    """This process's rank in the job (0 .. size() - 1)."""
    return _comm().Get_rank()


def size() -> int:
    """The number of ranks in the job."""
    return _comm().Get_size()


def local_rank() -> int:
    """The rank among the processes on this node (for pinning threads or devices)."""
    _comm()
    return _state["local"][0]


def local_size() -> int:
    """The number of ranks on this node."""
    _comm()
    return _state["local"][1]


def barrier() -> None:
    _comm().Barrier()


def abort(code: int = 1) -> None:
    """End every rank of the job now (MPI_Abort)."""
    _comm().Abort(int(code))


# ---- collectives on arrays ------------------------------------------------------------------------
_OPS = ("sum", "mean", "max", "min", "prod")


def _buffer(x, who: str, name: str = "tensor") -> np.ndarray:
    """The contiguous numpy array behind ``x`` (a Tensor or an ndarray) that MPI reads and writes."""
    arr = x._data if isinstance(x, Tensor) else x
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{who}: {name} must be a numpy array or a CPU forgegrad Tensor, got {type(arr).__name__}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{who}: {name} must be C-contiguous (MPI reads it in place); pass np.ascontiguousarray(x)")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{who}: {name} has dtype {arr.dtype}; expected a float, integer or bool array")
    return arr


def _mpi_op(op: str, who: str):
    if op not in _OPS:
        raise ValueError(f"{who}: op must be one of {_OPS}, got {op!r}")
    MPI = _mpi()
    return {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "prod": MPI.PROD}[op]


def _like(x, arr: np.ndarray):
    return Tensor._wrap(arr) if isinstance(x, Tensor) else arr


def allreduce(x, op: str = "sum"):
    """Reduce ``x`` over all ranks in place (every rank ends with the result) and return it.

    ``op``: "sum", "mean" (sum, then divided by size(); float arrays only), "max", "min", "prod".
    """
    comm = _comm()
    arr = _buffer(x, "allreduce")
    if op == "mean" and arr.dtype.kind != "f":
        raise TypeError(f"allreduce: op='mean' needs a float array, got dtype {arr.dtype}")
    comm.Allreduce(_mpi().IN_PLACE, arr, op=_mpi_op(op, "allreduce"))
    if op == "mean":
        arr *= arr.dtype.type(1.0 / comm.Get_size())
    return x


def broadcast(x, root: int = 0):
    """Overwrite ``x`` on every rank with root's ``x`` (in place) and return it."""
    comm = _comm()
    _check_root(root, comm)
    comm.Bcast(_buffer(x, "broadcast"), root=root)
    return x


def allgather(x):
    """Every rank's ``x`` stacked in rank order: shape ``(size(), *x.shape)``. Shapes must agree."""
    comm = _comm()
    arr = _buffer(x, "allgather")
    out = np.empty((comm.Get_size(),) + arr.shape, dtype=arr.dtype)
    comm.Allgather(arr, out)
    return _like(x, out)


def reduce_scatter(x, op: str = "sum"):
    """Reduce ``x`` over ranks and give rank r the r-th of size() equal blocks along dim 0.

    ``x.shape[0]`` must be divisible by size(); the result has shape ``(x.shape[0] // size(), ...)``.
    """
    comm = _comm()
    arr = _buffer(x, "reduce_scatter")
    n = comm.Get_size()
    if arr.ndim == 0 or arr.shape[0] % n:
        raise ValueError(f"reduce_scatter: dim 0 of the input must be divisible by the number of ranks ({n}), "
                         f"got shape {arr.shape}")
    if op == "mean" and arr.dtype.kind != "f":
        raise TypeError(f"reduce_scatter: op='mean' needs a float array, got dtype {arr.dtype}")
    out = np.empty((arr.shape[0] // n,) + arr.shape[1:], dtype=arr.dtype)
    comm.Reduce_scatter_block(arr, out, op=_mpi_op(op, "reduce_scatter"))
    if op == "mean":
        out *= out.dtype.type(1.0 / n)
    return _like(x, out)


def allgather_object(obj) -> list:
    """Every rank's picklable ``obj``, in rank order (for small metadata, not tensors)."""
    return _comm().allgather(obj)


def broadcast_object(obj, root: int = 0):
    """Root's picklable ``obj`` on every rank."""
    comm = _comm()
    _check_root(root, comm)
    return comm.bcast(obj, root=root)


def _check_root(root, comm) -> None:
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < comm.Get_size():
        raise ValueError(f"root must be a rank in [0, {comm.Get_size()}), got {root!r}")


def launched_size(environ: Optional[dict] = None) -> int:
    """The number of ranks an MPI launcher started this process with, read from the environment
    (MPICH/Hydra and Slurm's PMI, Open MPI), without starting MPI; 1 when not launched."""
    env = os.environ if environ is None else environ
    for key in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        value = env.get(key)
        if value and value.isdigit():
            return int(value)
    return 1
