"""DeviceMesh: the job's ranks laid out as an n-dimensional array, a process group per dimension
(torch.distributed.device_mesh's API, on the process groups of groups.py).

    mesh = dist.init_device_mesh("cpu", (2, 4), mesh_dim_names=("replicate", "shard"))
    model = dist.FullyShardedDataParallel(net, device_mesh=mesh, sharding_strategy="HYBRID_SHARD")
    mesh["shard"].get_group()         # this rank's row: the 4 ranks holding the other slices of each unit
    mesh.get_local_rank("replicate")  # this rank's row index, 0 or 1

Along dimension d, the ranks whose coordinates differ only in d form one group (a 2-D mesh's rows are the
groups of dimension 1, its columns those of dimension 0): one ``MPI_Comm_split`` per dimension, made when
the mesh is, collective over the whole job as torch's (every rank builds the mesh, with the same ranks).
A group's rank order is the mesh's, so ``get_local_rank(d)`` is both this rank's coordinate in d and its
rank in that group. A dimension spanning the whole job in rank order is ``GroupMember.WORLD`` itself (no
new communicator). ``mesh["name"]`` (or a tuple of names, in the mesh's order) is this rank's slice
through the named dimensions: a sub-mesh sharing the parent's groups, made without communication.

The device is the CPU: forgegrad.distributed runs its collectives on host arrays over MPI (no NCCL), so
``device_type`` other than "cpu" is a ValueError, "cuda" included.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from . import comm as _c
from .comm import GroupMember, ProcessGroup

__all__ = ["DeviceMesh", "init_device_mesh"]

WHO = "DeviceMesh"


class DeviceMesh:
    """Ranks in an n-dimensional array with a process group per dimension (torch's DeviceMesh).

    Args:
        device_type: "cpu" (the only device forgegrad.distributed communicates from).
        mesh: the global ranks, an n-dimensional array (nested lists, numpy array or Tensor) of distinct
            ranks of the job; every rank of the job builds the mesh, with the same array (checked).
            A rank outside it gets ``get_coordinate() is None`` and no groups.
        mesh_dim_names: a name per dimension (distinct strings), for ``mesh["name"]`` and ``get_group("name")``.
    """

    def __init__(self, device_type: str, mesh, *, mesh_dim_names: Optional[Sequence[str]] = None,
                 _groups: Optional[List[ProcessGroup]] = None):
        _check_device(device_type)
        ranks = _as_array(mesh)
        names = _dim_names(mesh_dim_names, ranks.ndim)
        self.device_type = "cpu"
        self._ranks = ranks
        self.mesh_dim_names = names
        self._all = None  # the group of every rank of the mesh, made on first use (_all_group)
        me = _c.rank()
        where = np.argwhere(ranks == me)
        self._coordinate = [int(i) for i in where[0]] if len(where) else None
        if _groups is not None:  # a sub-mesh: the parent's groups, no communication
            self._groups = _groups
            return
        n = _c.size()
        bad = [int(r) for r in ranks.reshape(-1) if not 0 <= r < n]
        if bad:
            raise ValueError(f"{WHO}: mesh holds rank {bad[0]}, out of range: the job's ranks are 0 to {n - 1}")
        if len(np.unique(ranks)) != ranks.size:
            raise ValueError(f"{WHO}: mesh must hold distinct ranks, got {ranks.tolist()}")
        from .groups import _same_everywhere, _subgroups
        _same_everywhere((ranks.tolist(), names), WHO, "mesh and mesh_dim_names")
        self._groups = []
        for d in range(ranks.ndim):
            lists = np.moveaxis(ranks, d, -1).reshape(-1, ranks.shape[d]).tolist()
            if lists == [list(range(n))]:  # the whole job in rank order: the world's own communicator
                self._groups.append(GroupMember.WORLD)
                continue
            label = names[d] if names else f"dim {d}"
            mine, _ = _subgroups(lists, f"DeviceMesh {label}")  # group rank = coordinate (the mesh's order)
            self._groups.append(mine)

    # ---- torch's surface -----------------------------------------------------------------------
    @property
    def mesh(self):
        """The global ranks, an int64 Tensor of the mesh's shape."""
        from ..tensor import Tensor
        return Tensor._wrap(self._ranks.copy())

    @property
    def ndim(self) -> int:
        return self._ranks.ndim

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self._ranks.shape)

    def size(self, mesh_dim: Optional[Union[int, str]] = None) -> int:
        """The number of ranks along ``mesh_dim`` (None: in the whole mesh)."""
        return int(self._ranks.size) if mesh_dim is None else int(self._ranks.shape[self._dim(mesh_dim)])

    def get_rank(self) -> int:
        """This process's global rank."""
        return _c.rank()

    def get_coordinate(self) -> Optional[List[int]]:
        """This rank's index along every dimension, or None when the mesh does not hold it."""
        return None if self._coordinate is None else list(self._coordinate)

    def get_group(self, mesh_dim: Optional[Union[int, str]] = None) -> ProcessGroup:
        """This rank's group along ``mesh_dim`` (an index or a name; None only for a 1-D mesh)."""
        d = self._dim_or_only(mesh_dim, "get_group")
        self._member("get_group")
        return self._groups[d]

    def get_all_groups(self) -> List[ProcessGroup]:
        """This rank's group along every dimension, in order."""
        self._member("get_all_groups")
        return list(self._groups)

    def get_local_rank(self, mesh_dim: Optional[Union[int, str]] = None) -> int:
        """This rank's coordinate along ``mesh_dim`` (None only for a 1-D mesh): its rank in that dimension's group."""
        d = self._dim_or_only(mesh_dim, "get_local_rank")
        self._member("get_local_rank")
        return self._coordinate[d]

    def __getitem__(self, names: Union[str, Tuple[str, ...]]) -> "DeviceMesh":
        """The sub-mesh through this rank along the named dimensions (a name, or a tuple of names in the
        mesh's order), sharing this mesh's groups."""
        if not self.mesh_dim_names:
            raise RuntimeError(f"{WHO}: cannot slice a DeviceMesh without mesh_dim_names (pass mesh_dim_names= "
                               "to init_device_mesh)")
        wanted = (names,) if isinstance(names, str) else tuple(names)
        if not wanted or not all(isinstance(n, str) for n in wanted):
            raise KeyError(f"{WHO}: index a mesh by a dimension name or a tuple of names, got {names!r}")
        dims = [self._dim(n) for n in wanted]
        if dims != sorted(set(dims)):
            raise KeyError(f"{WHO}: the names {wanted} must be distinct and in the mesh's order "
                           f"{self.mesh_dim_names}")
        if tuple(wanted) == self.mesh_dim_names:
            return self
        self._member("__getitem__")
        index = tuple(slice(None) if d in dims else self._coordinate[d] for d in range(self.ndim))
        return DeviceMesh("cpu", self._ranks[index], mesh_dim_names=wanted, _groups=[self._groups[d] for d in dims])

    def __repr__(self) -> str:
        names = f", mesh_dim_names={self.mesh_dim_names}" if self.mesh_dim_names else ""
        return f"DeviceMesh('{self.device_type}', {self._ranks.tolist()}{names})"

    def __eq__(self, other) -> bool:
        return isinstance(other, DeviceMesh) and np.array_equal(self._ranks, other._ranks) and \
            self.mesh_dim_names == other.mesh_dim_names

    def __hash__(self) -> int:
        return hash((tuple(self._ranks.reshape(-1).tolist()), self.shape, self.mesh_dim_names))

    # ---- helpers -------------------------------------------------------------------------------
    def _dim(self, mesh_dim) -> int:
        if isinstance(mesh_dim, str):
            if not self.mesh_dim_names or mesh_dim not in self.mesh_dim_names:
                raise KeyError(f"{WHO}: no dimension named {mesh_dim!r}; the mesh's dimensions are "
                               f"{self.mesh_dim_names or 'unnamed (pass mesh_dim_names=)'}")
            return self.mesh_dim_names.index(mesh_dim)
        if isinstance(mesh_dim, bool) or not isinstance(mesh_dim, (int, np.integer)) or \
                not -self.ndim <= mesh_dim < self.ndim:
            raise ValueError(f"{WHO}: mesh_dim must be a dimension index in [0, {self.ndim}) or one of the names "
                             f"{self.mesh_dim_names}, got {mesh_dim!r}")
        return int(mesh_dim) % self.ndim

    def _dim_or_only(self, mesh_dim, what: str) -> int:
        if mesh_dim is None:
            if self.ndim != 1:
                raise ValueError(f"{WHO}.{what}: the mesh has {self.ndim} dimensions; pass mesh_dim (an index or "
                                 f"a name of {self.mesh_dim_names})")
            return 0
        return self._dim(mesh_dim)

    def _member(self, what: str) -> None:
        if self._coordinate is None:
            raise ValueError(f"{WHO}.{what}: global rank {_c.rank()} is not in the mesh {self._ranks.tolist()}")

    def _all_group(self) -> ProcessGroup:
        """The group of every rank of the mesh (the world when it holds the whole job), made on first use,
        collectively over the mesh's ranks only (FullyShardedDataParallel's HYBRID_SHARD on part of a job)."""
        if self._all is None or (self._all is not GroupMember.WORLD and self._all.comm is None):
            everyone = sorted(int(r) for r in self._ranks.reshape(-1))
            if everyone == list(range(_c.size())):
                self._all = GroupMember.WORLD
            else:
                from .groups import new_group
                self._all = new_group(everyone, use_local_synchronization=True, group_desc="DeviceMesh")
        return self._all


def init_device_mesh(device_type: str, mesh_shape: Sequence[int], *,
                     mesh_dim_names: Optional[Sequence[str]] = None) -> DeviceMesh:
    """The job's ranks, in order, as a mesh of ``mesh_shape`` (its product must be the number of ranks),
    with a process group per dimension (torch's ``init_device_mesh``; collective over the job).
    ``device_type``: "cpu"."""
    _check_device(device_type)
    if isinstance(mesh_shape, (int, np.integer)) and not isinstance(mesh_shape, bool):
        mesh_shape = (mesh_shape,)
    if not isinstance(mesh_shape, (tuple, list)) or not mesh_shape or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in mesh_shape):
        raise ValueError(f"init_device_mesh: mesh_shape must be a non-empty tuple of positive ints, got {mesh_shape!r}")
    n = _c.size()
    if int(np.prod(mesh_shape)) != n:
        raise ValueError(f"init_device_mesh: mesh_shape {tuple(mesh_shape)} holds {int(np.prod(mesh_shape))} ranks; "
                         f"the job has {n} (the product of mesh_shape must be the world size)")
    _dim_names(mesh_dim_names, len(mesh_shape))
    return DeviceMesh(device_type, np.arange(n).reshape(tuple(int(s) for s in mesh_shape)),
                      mesh_dim_names=mesh_dim_names)


def _check_device(device_type) -> None:
    if device_type == "cpu":
        return
    if device_type == "cuda":
        raise ValueError("DeviceMesh: device_type='cuda' is not supported: forgegrad.distributed communicates "
                         "host (CPU) arrays over MPI and has no GPU (NCCL) backend; use 'cpu'")
    raise ValueError(f"DeviceMesh: device_type must be 'cpu', got {device_type!r}")


def _as_array(mesh) -> np.ndarray:
    data = getattr(mesh, "_data", mesh)  # a forgegrad Tensor's array
    try:
        ranks = np.asarray(data)
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"{WHO}: mesh must be a rectangular array of global ranks, got {mesh!r}") from e
    if ranks.ndim == 0 or ranks.size == 0 or ranks.dtype == bool or not np.issubdtype(ranks.dtype, np.integer):
        raise ValueError(f"{WHO}: mesh must be a non-empty array of integer global ranks, got {mesh!r}")
    return ranks.astype(np.int64)


def _dim_names(names, ndim: int) -> Optional[Tuple[str, ...]]:
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, (tuple, list)):
        raise ValueError(f"{WHO}: mesh_dim_names must be a tuple of strings, one per dimension, got {names!r}")
    names = tuple(names)
    if len(names) != ndim:
        raise ValueError(f"{WHO}: mesh_dim_names {names} must have one name per dimension of the mesh ({ndim})")
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{WHO}: mesh_dim_names must be non-empty strings, got {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"{WHO}: each mesh_dim_name must be unique, got {names}")
    return names


def groups_for_wrapper(who: str, device_mesh, process_group, hybrid: bool):
    """``(process_group, data-parallel group or None)`` for a wrapper given ``device_mesh``: a 1-D mesh's
    group; for HYBRID_SHARD (``hybrid``) a 2-D mesh's ``(shard group, replicate group)`` (dimension 1, then
    0, as torch) and the group of all its ranks. ValueError for a mesh of another dimension, a rank outside
    it, or ``process_group`` given too."""
    if device_mesh is None:
        return process_group, None
    if not isinstance(device_mesh, DeviceMesh):
        raise TypeError(f"{who}: device_mesh must be a DeviceMesh (init_device_mesh), got {type(device_mesh).__name__}")
    if process_group is not None:
        raise ValueError(f"{who}: pass process_group or device_mesh, not both")
    if device_mesh.get_coordinate() is None:
        raise ValueError(f"{who}: global rank {_c.rank()} is not in device_mesh {device_mesh!r}; wrap the model "
                         "only on the mesh's ranks")
    if hybrid:
        if device_mesh.ndim != 2:
            raise ValueError(f"{who}: HYBRID_SHARD expects a 2-D device_mesh (replicate over dimension 0, shard "
                             f"over dimension 1), got ndim={device_mesh.ndim}")
        return (device_mesh.get_group(1), device_mesh.get_group(0)), device_mesh._all_group()
    if device_mesh.ndim != 1:
        hybrid_hint = " (a 2-D one with sharding_strategy=HYBRID_SHARD)" if "Sharded" in who else ""
        raise ValueError(f"{who}: expects a 1-D device_mesh{hybrid_hint}, got ndim={device_mesh.ndim}; pass a "
                         "sub-mesh, e.g. mesh['name']")
    return device_mesh.get_group(0), None
