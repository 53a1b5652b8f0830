"""Data-parallel training over MPI (Horovod's model on forgegrad's autograd).

    import forgegrad.distributed as dist
    dist.init()                                   # under mpiexec -n N: one rank per process
    model = dist.DistributedDataParallel(net)     # rank 0's weights everywhere; gradients averaged
    loader = DataLoader(ds, batch_size=64, sampler=dist.DistributedSampler(ds))
    fit(model, loss_fn, optim.Adam(model.parameters()), loader, epochs=5)   # logs/checkpoints on rank 0

Process groups (``new_group``, ``new_subgroups``) run collectives, DDP, ZeRO and FSDP over some of the
ranks: ``group=`` / ``process_group=``, as torch.distributed (groups.py); ``init_device_mesh`` lays the ranks
out as a mesh with a group per dimension (``device_mesh=`` for DDP and FSDP: device_mesh.py).

Needs the optional extra ``mpi`` (mpi4py and an MPI library): ``pip install "forgegrad[mpi]"``.
Importing this package does not start MPI; ``init()`` does. See docs/distributed.md.
"""
from .comm import (GroupMember, ProcessGroup, abort, allgather, allgather_object, allreduce, barrier, broadcast,
                   broadcast_object, init, is_available, is_distributed, is_initialized, launched_size, local_rank,
                   local_size, rank, reduce_scatter, size)
from .device_mesh import DeviceMesh, init_device_mesh
from .ddp import DistributedDataParallel, DistributedOptimizer, broadcast_optimizer_state, broadcast_parameters
from .fsdp import BackwardPrefetch, FullyShardedDataParallel, ShardingStrategy
from .fsdp_wrap import (ModuleWrapPolicy, lambda_auto_wrap_policy, size_based_auto_wrap_policy,
                        transformer_auto_wrap_policy)
from .groups import (destroy_process_group, get_global_rank, get_group_rank, get_process_group_ranks, get_rank,
                     get_world_size, new_group, new_subgroups, new_subgroups_by_enumeration)
from .sampler import DistributedSampler
from .zero import ZeroRedundancyOptimizer

__all__ = ["init", "is_available", "is_initialized", "is_distributed", "rank", "size", "local_rank", "local_size",
           "barrier", "abort", "allreduce", "broadcast", "allgather", "reduce_scatter", "allgather_object",
           "broadcast_object", "launched_size", "DistributedDataParallel", "DistributedOptimizer",
           "broadcast_parameters", "broadcast_optimizer_state", "DistributedSampler", "ZeroRedundancyOptimizer",
           "FullyShardedDataParallel", "BackwardPrefetch", "ShardingStrategy", "ModuleWrapPolicy",
           "transformer_auto_wrap_policy", "size_based_auto_wrap_policy", "lambda_auto_wrap_policy",
           "ProcessGroup", "GroupMember",
           "new_group", "new_subgroups", "new_subgroups_by_enumeration", "get_rank", "get_world_size", "get_group_rank",
           "get_global_rank", "get_process_group_ranks", "destroy_process_group", "DeviceMesh", "init_device_mesh"]
