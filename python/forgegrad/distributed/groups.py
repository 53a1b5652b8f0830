"""Process groups: collectives, DDP, ZeRO and FSDP over some of the ranks (torch.distributed's group API).

    g01 = dist.new_group([0, 1])          # every rank calls it (as torch); ranks 2, 3 get NON_GROUP_MEMBER
    g23 = dist.new_group([2, 3])
    mine = g01 if dist.rank() < 2 else g23
    dist.allreduce(x, group=mine)         # pairs up only among the group's ranks
    model = dist.DistributedDataParallel(net, process_group=mine)
    cur, all_groups = dist.new_subgroups(2)      # [0, 1], [2, 3], ...: the same in one call

A group is an MPI communicator of its own (``MPI_Comm_split`` of COMM_WORLD), so its collectives match
only its own ranks' and never wait for, or pair with, a collective of another group or of the world.
Group ranks follow the sorted global ranks (``sort_ranks=False``: the order given), as torch's.
Creating a group is collective over the whole job (``use_local_synchronization=True``: over the
group's ranks only, ``MPI_Comm_create_group``; ``new_subgroups(group=g)``: over g's ranks, a split of
g's communicator), and every rank checks first that all ranks asked for the same groups: different
lists would leave the ranks in unmatched calls, so they get a ValueError. ``destroy_process_group()``
frees them all (MPI_Comm_free).
"""
from __future__ import annotations

import weakref
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import comm as _c
from .comm import NON_GROUP_MEMBER, GroupMember, ProcessGroup

__all__ = ["new_group", "new_subgroups", "new_subgroups_by_enumeration", "get_rank", "get_world_size",
           "get_group_rank", "get_global_rank", "get_process_group_ranks", "destroy_process_group"]


def _check_options(who: str, timeout, backend, pg_options) -> None:
    if timeout is not None:
        raise ValueError(f"{who}: timeout is not supported: MPI collectives have no timeout (a failing rank aborts "
                         "the job instead); pass timeout=None")
    if backend is not None and str(backend).lower() != "mpi":
        raise ValueError(f"{who}: backend must be None or 'mpi' (forgegrad.distributed runs on MPI), got {backend!r}")
    if pg_options is not None:
        raise ValueError(f"{who}: pg_options is not supported by the MPI backend; pass pg_options=None")


def _rank_list(ranks, who: str, name: str, sort: bool) -> List[int]:
    """``ranks`` as a list of valid, distinct global ranks (sorted unless ``sort`` is False)."""
    n = _c.size()
    if isinstance(ranks, (str, bytes)) or not hasattr(ranks, "__iter__"):
        raise TypeError(f"{who}: {name} must be a list of global ranks, got {type(ranks).__name__}")
    out = list(ranks)
    for r in out:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
            raise TypeError(f"{who}: {name} must hold integer global ranks, got {r!r} in {out}")
    out = [int(r) for r in out]
    if not out:
        raise ValueError(f"{who}: {name} must not be empty (ranks=None: every rank)")
    bad = [r for r in out if not 0 <= r < n]
    if bad:
        raise ValueError(f"{who}: {name} holds rank {bad[0]}, out of range: the job's ranks are 0 to {n - 1} "
                         f"(got {out})")
    if len(set(out)) != len(out):
        raise ValueError(f"{who}: {name} must not contain duplicate entries, got {out}")
    return sorted(out) if sort else out


def _same_everywhere(value, who: str, name: str, group: Optional[ProcessGroup] = None) -> None:
    """ValueError on every rank of ``group`` (None: the job) when its ranks passed different ``value``s (they
    would hang in MPI). The message names global ranks."""
    group = group or GroupMember.WORLD
    everyone = _c.allgather_object(value, group=group)
    for r, v in zip(group.ranks, everyone):
        if v != everyone[0]:
            raise ValueError(f"{who}: every rank must pass the same {name} (rank {group.ranks[0]} passed "
                             f"{everyone[0]}, rank {r} passed {v})")


def _register(group: ProcessGroup) -> ProcessGroup:
    """Remember ``group`` for destroy_process_group() (weakly: a dropped group is not kept alive)."""
    _c._state["groups"].append(weakref.ref(group))
    return group


def _split(lists: List[List[int]], desc: Optional[str], parent: Optional[ProcessGroup] = None):
    """One MPI_Comm_split of ``parent`` (None: the world) into the given disjoint groups of its ranks
    (collective over the parent's ranks): this rank's ProcessGroup, or NON_GROUP_MEMBER when no list holds
    it, and the index of its list."""
    MPI = _c._mpi()
    me = _c.rank()
    mine = next((i for i, ranks in enumerate(lists) if me in ranks), None)
    color = MPI.UNDEFINED if mine is None else mine
    key = 0 if mine is None else lists[mine].index(me)
    comm = (parent or GroupMember.WORLD).comm.Split(color, key)
    if mine is None:
        return NON_GROUP_MEMBER, None
    return _register(ProcessGroup(comm, lists[mine], desc)), mine


def new_group(ranks: Optional[Sequence[int]] = None, timeout=None, backend=None, pg_options=None,
              use_local_synchronization: bool = False, group_desc: Optional[str] = None, device_id=None,
              sort_ranks: bool = True):
    """A group of the global ``ranks`` (None: every rank) with a communicator of its own (torch's ``new_group``).

    Every rank of the job must call it, with the same ``ranks``, and create groups in the same order; a
    rank outside ``ranks`` gets ``GroupMember.NON_GROUP_MEMBER``. Group rank i is the i-th of the sorted
    ranks (``sort_ranks=False``: of ``ranks`` as given). ``use_local_synchronization=True``: only the
    group's ranks need to call it (the others, if they do, get NON_GROUP_MEMBER at once, without
    communicating). ``timeout``, ``pg_options`` and a backend other than MPI are refused (ValueError);
    ``device_id`` must be None (CPU ranks).
    """
    who = "new_group"
    _c._comm()
    _check_options(who, timeout, backend, pg_options)
    if device_id is not None:
        raise ValueError(f"{who}: device_id must be None (forgegrad.distributed's ranks run on the CPU)")
    ranks = list(range(_c.size())) if ranks is None else _rank_list(ranks, who, "ranks", sort_ranks)
    if use_local_synchronization:
        if _c.rank() not in ranks:
            return NON_GROUP_MEMBER
        world = _c._comm()
        everyone = world.Get_group()
        members = everyone.Incl(ranks)
        comm = world.Create_group(members)
        members.Free()
        everyone.Free()
        _check_members_agree(comm, ranks, who)
        return _register(ProcessGroup(comm, ranks, group_desc))
    _same_everywhere(ranks, who, "ranks")
    return _split([ranks], group_desc)[0]


def _check_members_agree(comm, ranks: List[int], who: str) -> None:
    everyone = comm.allgather(ranks)
    for v in everyone:
        if v != ranks:
            raise ValueError(f"{who}: every rank of the group must pass the same ranks (got {ranks} and {v})")


def new_subgroups(group_size: Optional[int] = None, group=None, timeout=None, backend=None, pg_options=None,
                  group_desc: Optional[str] = None) -> Tuple[object, list]:
    """Split ``group`` (None: the job) into consecutive subgroups of ``group_size`` ranks, in its group-rank
    order (torch's ``new_subgroups``): returns this rank's subgroup and the list of all of them
    (NON_GROUP_MEMBER for those this rank is not in). Collective over the ranks of ``group`` only (one
    MPI_Comm_split of its communicator): the other ranks do not call it (given their NON_GROUP_MEMBER
    handle they get a ValueError), and do not wait for it."""
    who = "new_subgroups"
    _c._comm()
    _check_options(who, timeout, backend, pg_options)
    if group_size is None:
        raise ValueError(f"{who}: pass group_size (torch's default, the GPUs per machine, has no CPU counterpart)")
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size <= 0:
        raise ValueError(f"{who}: group_size must be a positive integer, got {group_size!r}")
    if group is NON_GROUP_MEMBER:
        raise ValueError(f"{who}: group is GroupMember.NON_GROUP_MEMBER: global rank {_c.rank()} is not in it; "
                         f"only the group's ranks call {who}(group=...)")
    parent = _c._group(group, who)
    n = parent.size()
    if group_size > n:
        raise ValueError(f"{who}: group_size ({group_size}) must not exceed the group's size ({n})")
    if n % group_size:
        raise ValueError(f"{who}: the group's size ({n}) must be divisible by group_size={group_size}")
    _same_everywhere(int(group_size), who, "group_size", parent)
    ranks = parent.ranks
    # sorted within each subgroup, as torch's (its new_group sorts); the parent's own order picks the members
    return _subgroups([sorted(ranks[i:i + group_size]) for i in range(0, n, group_size)], group_desc, parent)


def new_subgroups_by_enumeration(ranks_per_subgroup_list, timeout=None, backend=None, pg_options=None,
                                 group_desc: Optional[str] = None) -> Tuple[object, list]:
    """Disjoint groups, one per list of global ranks (torch's ``new_subgroups_by_enumeration``), made by one
    MPI_Comm_split: returns this rank's subgroup (NON_GROUP_MEMBER when no list holds it) and the list of
    all of them as this rank sees them. Collective over every rank of the job."""
    who = "new_subgroups_by_enumeration"
    _c._comm()
    _check_options(who, timeout, backend, pg_options)
    if ranks_per_subgroup_list is None or isinstance(ranks_per_subgroup_list, (str, bytes)) or \
            not hasattr(ranks_per_subgroup_list, "__iter__"):
        raise ValueError(f"{who}: ranks_per_subgroup_list must be a list of lists of global ranks, got "
                         f"{ranks_per_subgroup_list!r}")
    lists = [_rank_list(r, who, "ranks_per_subgroup_list", True) for r in ranks_per_subgroup_list]
    if not lists:
        raise ValueError(f"{who}: ranks_per_subgroup_list must not be empty")
    seen = {}
    for i, ranks in enumerate(lists):
        for r in ranks:
            if r in seen:
                raise ValueError(f"{who}: ranks_per_subgroup_list has rank {r} in both subgroup {seen[r]} and "
                                 f"subgroup {i}; the subgroups must not overlap")
            seen[r] = i
    _same_everywhere(lists, who, "ranks_per_subgroup_list")
    return _subgroups(lists, group_desc)


def _subgroups(lists: List[List[int]], desc: Optional[str], parent: Optional[ProcessGroup] = None):
    """The disjoint groups ``lists`` of ``parent``'s ranks (None: the job's), collective over the parent."""
    mine, index = _split(lists, desc, parent)
    return mine, [mine if i == index else NON_GROUP_MEMBER for i in range(len(lists))]


def _registered(group, who: str) -> ProcessGroup:
    _c._comm()  # before init() there is no world to look a rank up in
    if group is None:
        group = GroupMember.WORLD
    if group is NON_GROUP_MEMBER:
        raise ValueError(f"{who}: group is GroupMember.NON_GROUP_MEMBER: this rank is not in the group and holds "
                         "no handle to look its ranks up in")
    if not isinstance(group, ProcessGroup):
        raise TypeError(f"{who}: group must be a ProcessGroup from new_group(), got {type(group).__name__}")
    return group


def get_rank(group=None) -> int:
    """This process's rank in ``group`` (None: its global rank); -1 outside the group, as torch."""
    if group is NON_GROUP_MEMBER:
        return -1
    return _registered(group, "get_rank").rank() if group is not None else _c.rank()


def get_world_size(group=None) -> int:
    """The number of ranks in ``group`` (None: the job); -1 on a rank outside the group, as torch."""
    if group is NON_GROUP_MEMBER:
        return -1
    return _registered(group, "get_world_size").size() if group is not None else _c.size()


def get_group_rank(group, global_rank: int) -> int:
    """The rank in ``group`` of the process with global rank ``global_rank`` (ValueError if not in it)."""
    g = _registered(group, "get_group_rank")
    if global_rank not in g._group_rank:
        raise ValueError(f"Global rank {global_rank} is not part of group {g!r}")
    return g._group_rank[global_rank]


def get_global_rank(group, group_rank: int) -> int:
    """The global rank of the process with rank ``group_rank`` in ``group`` (ValueError if out of range)."""
    g = _registered(group, "get_global_rank")
    if isinstance(group_rank, bool) or not isinstance(group_rank, (int, np.integer)) or \
            not 0 <= group_rank < g.size():
        raise ValueError(f"Group rank {group_rank} is not part of group {g!r}")
    return g.ranks[group_rank]


def get_process_group_ranks(group) -> List[int]:
    """The global ranks of ``group`` (None: the job), in group-rank order."""
    return _registered(group, "get_process_group_ranks").ranks


def destroy_process_group(group=None) -> None:
    """Free ``group``'s communicator (collective over its ranks); later collectives on it are a ValueError.

    None or GroupMember.WORLD (torch's call at the end of a script): free every group this rank holds, in the
    order they were made (the same on every rank), as torch destroys them all. The world itself is not
    destroyed: MPI ends with the process, and the world's collectives keep working until then.
    Passing NON_GROUP_MEMBER does nothing."""
    if group is NON_GROUP_MEMBER:
        return
    _c._comm()
    g = _registered(group, "destroy_process_group")
    if g is GroupMember.WORLD:
        live = [ref() for ref in _c._state["groups"]]
        _c._state["groups"].clear()
        for member in live:
            if member is not None:
                _free(member)
        return
    _free(g)


def _free(g: ProcessGroup) -> None:
    if g.comm is not None:
        g.comm.Free()
        g.comm = None
