"""The MPI world: init, rank/size, and collectives on numpy arrays and Tensors (through mpi4py).

Collectives hand the arrays' own memory to mpi4py's buffer-protocol (uppercase) calls: no pickling
and no staging copies. ``allreduce`` and ``broadcast`` work in place, like torch.distributed;
``allgather`` and ``reduce_scatter`` return a new array (of the input's kind: Tensor in, Tensor out).

Every collective takes ``group=``: None (the world, MPI's COMM_WORLD) or a :class:`ProcessGroup` from
``new_group`` / ``new_subgroups`` (groups.py), which runs it on the group's own communicator. On a rank
outside the group (its handle is ``GroupMember.NON_GROUP_MEMBER``) a collective does nothing and warns,
as torch.distributed does. Roots (``broadcast``'s ``root``) are global ranks, as torch's ``src``.

mpi4py (and an MPI library, e.g. the ``mpich`` wheel) is optional: ``pip install "forgegrad[mpi]"``.
Importing this module does not import mpi4py; ``init()`` does.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time
import warnings
from typing import Optional, Sequence

import numpy as np

from ..tensor import Tensor

__all__ = ["is_available", "is_initialized", "init", "rank", "size", "local_rank", "local_size", "barrier",
           "allreduce", "broadcast", "allgather", "reduce_scatter", "allgather_object", "broadcast_object",
           "abort", "is_distributed", "ProcessGroup", "GroupMember"]

_MISSING = ('forgegrad.distributed needs mpi4py and an MPI library; install them with pip install "forgegrad[mpi]" '
            '(mpi4py plus the mpich wheel)')

_state = {"comm": None, "local": None, "MPI": None, "world": None, "groups": []}  # groups: weakrefs (groups.py)


class ProcessGroup:
    """Some ranks of the job and an MPI communicator of their own (torch.distributed's ProcessGroup).

    Made by ``new_group`` / ``new_subgroups`` on the ranks it holds (the others get
    ``GroupMember.NON_GROUP_MEMBER``); ``GroupMember.WORLD`` is the whole job. ``rank()`` and ``size()``
    are this process's rank in the group and the group's size, ``ranks`` the global ranks in group-rank
    order. Collectives on it pair up only among its ranks, independently of the other groups'.
    """

    def __init__(self, comm, ranks: Sequence[int], desc: Optional[str] = None):
        self.comm = comm
        self._ranks = tuple(int(r) for r in ranks)
        self._group_rank = {g: i for i, g in enumerate(self._ranks)}
        self.group_desc = desc

    @property
    def ranks(self) -> list:
        """The global ranks of the group, in group-rank order."""
        return list(self._ranks)

    def rank(self) -> int:
        return self._group_rank[_comm().Get_rank()]

    def size(self) -> int:
        return len(self._ranks)

    def __repr__(self) -> str:
        desc = f", desc={self.group_desc!r}" if self.group_desc else ""
        return f"ProcessGroup(ranks={list(self._ranks)}{desc})"


class _NonGroupMember:
    """What ``new_group`` returns on a rank outside the group (torch's GroupMember.NON_GROUP_MEMBER)."""
    __slots__ = ()

    def __repr__(self) -> str:
        return "GroupMember.NON_GROUP_MEMBER"

    def __reduce__(self):
        return "NON_GROUP_MEMBER"


NON_GROUP_MEMBER = _NonGroupMember()


class _GroupMemberMeta(type):
    @property
    def WORLD(cls) -> Optional[ProcessGroup]:
        """The group of every rank (None before ``init()``)."""
        return _state["world"]


class GroupMember(metaclass=_GroupMemberMeta):
    """torch.distributed.GroupMember: ``WORLD`` (every rank) and ``NON_GROUP_MEMBER`` (the handle of a
    group on a rank outside it)."""
    NON_GROUP_MEMBER = NON_GROUP_MEMBER


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
    _state["world"] = ProcessGroup(comm, range(comm.Get_size()), "WORLD")
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
    """This process's rank in the job (0 .. size() - 1): its global rank."""
    return _comm().Get_rank()


def size() -> int:
    """The number of ranks in the job."""
    return _comm().Get_size()


def _group(group, who: str) -> Optional[ProcessGroup]:
    """The ProcessGroup a collective runs on (None: the world), or None on a rank outside it, after
    torch's warning (torch.distributed's collectives do nothing there)."""
    _comm()
    if group is None:
        return _state["world"]
    if group is NON_GROUP_MEMBER:
        warnings.warn(f"Running {who} on global rank {rank()} which does not belong to the given group.",
                      stacklevel=3)
        return None
    if not isinstance(group, ProcessGroup):
        raise TypeError(f"{who}: group must be None (every rank) or a ProcessGroup from new_group(), got "
                        f"{type(group).__name__}")
    if group.comm is None:
        raise ValueError(f"{who}: {group!r} has been destroyed (destroy_process_group)")
    return group


def _member_group(process_group, who: str, name: str = "process_group",
                  hint: str = "wrap the model only on the group's ranks") -> ProcessGroup:
    """The group a wrapper (DDP, ZeRO, FSDP) reduces over; a rank outside it has nothing to wrap.
    ``name``: the argument's name in ``who``'s signature."""
    if process_group is NON_GROUP_MEMBER:
        raise ValueError(f"{who}: {name} is GroupMember.NON_GROUP_MEMBER: global rank {rank()} is not in "
                         f"the group; {hint}")
    return _group(process_group, who)


def _group_root(g: ProcessGroup, root, group_src, who: str) -> int:
    """The group rank of a collective's root, given as a global rank (``root``, torch's ``src``) or
    as a rank in the group (``group_src``); neither: global rank 0."""
    if root is not None and group_src is not None:
        raise ValueError(f"{who}: give root (a global rank) or group_src (a rank in the group), not both")
    if group_src is not None:
        if isinstance(group_src, bool) or not isinstance(group_src, (int, np.integer)) or \
                not 0 <= group_src < g.size():
            raise ValueError(f"{who}: group_src must be a rank in the group, in [0, {g.size()}), got {group_src!r}")
        return int(group_src)
    root = 0 if root is None else root
    _check_root(root, _comm())
    if int(root) not in g._group_rank:
        raise ValueError(f"{who}: root {root} is not in {g!r}; root is a global rank (as torch's src): pass one "
                         f"of {g.ranks}, or group_src=")
    return g._group_rank[int(root)]


def local_rank() -> int:
    """The rank among the processes on this node (for pinning threads or devices)."""
    _comm()
    return _state["local"][0]


def local_size() -> int:
    """The number of ranks on this node."""
    _comm()
    return _state["local"][1]


def barrier(group=None) -> None:
    """Wait until every rank of ``group`` (None: the job) has entered the barrier."""
    g = _group(group, "barrier")
    if g is not None:
        g.comm.Barrier()


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


def allreduce(x, op: str = "sum", group=None):
    """Reduce ``x`` over the ranks of ``group`` (None: all) in place, every rank ending with the result,
    and return it (None on a rank outside the group, as torch).

    ``op``: "sum", "mean" (sum, then divided by the group's size; float arrays only), "max", "min", "prod".
    """
    g = _group(group, "allreduce")
    if g is None:
        return None
    arr = _buffer(x, "allreduce")
    if op == "mean" and arr.dtype.kind != "f":
        raise TypeError(f"allreduce: op='mean' needs a float array, got dtype {arr.dtype}")
    g.comm.Allreduce(_mpi().IN_PLACE, arr, op=_mpi_op(op, "allreduce"))
    if op == "mean":
        arr *= arr.dtype.type(1.0 / g.size())
    return x


def broadcast(x, root: Optional[int] = None, group=None, group_src: Optional[int] = None):
    """Overwrite ``x`` on every rank of ``group`` with the root's ``x`` (in place) and return it.

    ``root`` is a global rank (torch's ``src``; default 0), ``group_src`` the root's rank in the group."""
    g = _group(group, "broadcast")
    if g is None:
        return None
    src = _group_root(g, root, group_src, "broadcast")
    g.comm.Bcast(_buffer(x, "broadcast"), root=src)
    return x


def allgather(x, group=None):
    """The ``x`` of every rank of ``group``, stacked in group-rank order: shape ``(group size, *x.shape)``.
    Shapes must agree."""
    g = _group(group, "allgather")
    if g is None:
        return None
    arr = _buffer(x, "allgather")
    out = np.empty((g.size(),) + arr.shape, dtype=arr.dtype)
    g.comm.Allgather(arr, out)
    return _like(x, out)


def reduce_scatter(x, op: str = "sum", group=None):
    """Reduce ``x`` over the ranks of ``group`` and give group rank r the r-th of size equal blocks along dim 0.

    ``x.shape[0]`` must be divisible by the group's size; the result has shape ``(x.shape[0] // size, ...)``.
    """
    g = _group(group, "reduce_scatter")
    if g is None:
        return None
    arr = _buffer(x, "reduce_scatter")
    n = g.size()
    if arr.ndim == 0 or arr.shape[0] % n:
        raise ValueError(f"reduce_scatter: dim 0 of the input must be divisible by the number of ranks ({n}), "
                         f"got shape {arr.shape}")
    if op == "mean" and arr.dtype.kind != "f":
        raise TypeError(f"reduce_scatter: op='mean' needs a float array, got dtype {arr.dtype}")
    out = np.empty((arr.shape[0] // n,) + arr.shape[1:], dtype=arr.dtype)
    g.comm.Reduce_scatter_block(arr, out, op=_mpi_op(op, "reduce_scatter"))
    if op == "mean":
        out *= out.dtype.type(1.0 / n)
    return _like(x, out)


def allgather_object(obj, group=None) -> Optional[list]:
    """Every rank's picklable ``obj``, in group-rank order (for small metadata, not tensors)."""
    g = _group(group, "allgather_object")
    return None if g is None else g.comm.allgather(obj)


def broadcast_object(obj, root: Optional[int] = None, group=None, group_src: Optional[int] = None):
    """The root's picklable ``obj`` on every rank of ``group`` (``root``: a global rank, default 0)."""
    g = _group(group, "broadcast_object")
    if g is None:
        return None
    return g.comm.bcast(obj, root=_group_root(g, root, group_src, "broadcast_object"))


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
