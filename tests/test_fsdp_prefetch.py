"""FullyShardedDataParallel's page pool and prefetch at one rank (a one-process MPI world); the multi-rank
checks (prefetch on and off give the same bits at 2 and 3 ranks, also when the ranks' backward passes reach
different units) run in tests/test_distributed.py and tests/test_distributed_unreached.py."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.distributed import comm

pytestmark = pytest.mark.skipif(not comm.is_available(),
                                reason='mpi4py is not installed (pip install "forgegrad[mpi]")')


def _mlp():
    fg.manual_seed(0)
    from forgegrad import nn
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 8))


def _train(model, steps=3, **fsdp):
    """``steps`` Adam steps of FullyShardedDataParallel(model, **fsdp); returns the wrapper, the state and
    the page pool's misses (gathers into fresh pages) after each step."""
    import forgegrad.distributed as dist
    from forgegrad import optim
    comm.init()
    wrapped = dist.FullyShardedDataParallel(model, **fsdp)
    opt = dist.ZeroRedundancyOptimizer(wrapped.parameters(), optim.Adam, stage=3, lr=1e-2)
    rng = np.random.default_rng(0)
    misses = []
    for _ in range(steps):
        x = fg.tensor(rng.standard_normal((4, 64)).astype(np.float32))
        opt.zero_grad()
        (wrapped(x) ** 2).mean().backward()
        opt.step()
        assert wrapped.gathered_bytes() == 0
        misses.append(wrapped._pool.misses if wrapped._pool is not None else None)
    return wrapped, {k: v.numpy() for k, v in wrapped.state_dict().items()}, misses


def test_prefetch_settings_and_the_page_pool_change_no_bit(monkeypatch):
    """No prefetch, backward prefetch (PRE, the default; POST), forward prefetch, and units without the page
    pool (where mremap is missing they fall back to MADV_DONTNEED): the same parameters, bit for bit.
    Prefetch holds two units at once (one without); every gather after the first step takes pooled pages,
    also with units of two sizes (the last layer's)."""
    from forgegrad.distributed import _pages
    unit = 64 * 64 * 4 + 64 * 4
    ref, expected, _ = _train(_mlp(), backward_prefetch=None)
    assert ref.peak_gathered_bytes == unit
    for fsdp, peak in ((dict(), 2 * unit), (dict(backward_prefetch="BACKWARD_POST"), unit),
                       (dict(forward_prefetch=True, backward_prefetch=None), 2 * unit),
                       (dict(forward_prefetch=True), 2 * unit)):
        model, got, misses = _train(_mlp(), **fsdp)
        for k, v in expected.items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"{fsdp} {k}")
        assert model.peak_gathered_bytes == peak, fsdp
        if model._pool is not None:
            # 4 units gathered twice a step, and once more by state_dict(): fresh pages only in the first steps
            # (forward prefetch starts in the second, following the first's order)
            assert misses[1] == misses[-1] == model._pool.misses and model._pool.hits == 4 * 2 * 3 + 4 - misses[-1]
            assert 0 < model.pooled_bytes() and model.pooled_bytes() + model.gathered_bytes() <= model._pool.capacity
            model.empty_cache()
            assert model.pooled_bytes() == 0
    monkeypatch.setattr(_pages, "_libc", False)  # as where mremap is missing
    model, got, _ = _train(_mlp())
    assert model._pool is None and model.pooled_bytes() == 0
    for k, v in expected.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def test_forward_prefetch_follows_the_last_forward_and_frees_a_wrong_guess():
    """Forward prefetch gathers the unit that came next in the previous forward; a forward that takes another
    path (a module skipped) frees the unit it gathered for nothing, and training gives the bits it gives
    without prefetch."""
    import forgegrad.distributed as dist
    from forgegrad import nn, optim
    comm.init()

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            fg.manual_seed(0)
            self.a, self.b, self.c = nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 2)

        def forward(self, x, skip=False):
            h = self.a(x).tanh()
            return self.c(h if skip else self.b(h).tanh())

    ref = dist.FullyShardedDataParallel(Skip(), backward_prefetch=None)
    ref_opt = dist.ZeroRedundancyOptimizer(ref.parameters(), optim.Adam, stage=3, lr=1e-1)
    model = dist.FullyShardedDataParallel(Skip(), forward_prefetch=True)
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.Adam, stage=3, lr=1e-1)
    x = fg.tensor(np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32))
    for skip in (False, False, True, False, True, True):
        for m, o in ((ref, ref_opt), (model, opt)):
            o.zero_grad()
            out = m(x, skip=skip)
            # the wrong guess (b, after a) was freed at the end of the forward
            assert m.gathered_bytes() == 0 and not m._prefetched
            (out ** 2).mean().backward()
            o.step()
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def test_nested_units_with_every_prefetch_train_like_adamw():
    """Units inside units (transformer layers, their attention, its out_proj) with forward and backward
    prefetch: plain AdamW's steps bit for bit."""
    import forgegrad.distributed as dist
    from forgegrad import nn, optim
    comm.init()

    def make():
        fg.manual_seed(0)
        return nn.Sequential(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True),
                             nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), nn.Linear(16, 4))

    ref = make()
    model = dist.FullyShardedDataParallel(make(), forward_prefetch=True)
    ref_opt = optim.AdamW(ref.parameters(), lr=1e-2)
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), optim.AdamW, stage=3, lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = fg.tensor(rng.standard_normal((2, 5, 16)).astype(np.float32))
        for m, o in ((ref, ref_opt), (model, opt)):
            o.zero_grad()
            (m(x) ** 2).mean().backward()
            o.step()
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def test_bad_prefetch_arguments_raise():
    import forgegrad.distributed as dist
    from forgegrad import nn
    comm.init()
    with pytest.raises(ValueError, match="backward_prefetch must be BackwardPrefetch.BACKWARD_PRE"):
        dist.FullyShardedDataParallel(nn.Linear(2, 2), backward_prefetch="pre")
    with pytest.raises(TypeError, match="forward_prefetch must be a bool"):
        dist.FullyShardedDataParallel(nn.Linear(2, 2), forward_prefetch=1)
    model = dist.FullyShardedDataParallel(nn.Linear(2, 2), backward_prefetch=dist.BackwardPrefetch.BACKWARD_POST)
    assert model.backward_prefetch is dist.BackwardPrefetch.BACKWARD_POST


_REFUSED_MOVE = r'''
import ctypes, mmap, sys
import numpy as np
from forgegrad.distributed import _pages

libc = _pages._load_libc()
if libc is None:
    print("no mremap"); sys.exit(0)


class Refusing:
    """libc whose mremap(MREMAP_FIXED) fails as the kernel's may after unmapping the target (ENOMEM in move_vma)."""
    def __init__(self, lib):
        self.lib = lib
        self.munmap = lib.munmap
        self.mmap = getattr(lib, "mmap", None)

    def mremap(self, old, old_size, new_size, flags, new):
        if flags & _pages._MREMAP_FIXED:
            self.lib.munmap(new, new_size)
            return _pages._FAILED
        return self.lib.mremap(old, old_size, new_size, flags, new)


size = 3 * _pages.PAGE
m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
full = np.frombuffer(m, np.float32)
addr = full.__array_interface__["data"][0]
pool = _pages.PagePool(4 * size)
pool.libc = Refusing(libc)
full[:] = 1.0
pool.give(addr, size, m)
assert not full.any()  # freed: zeros
assert pool.take(addr, size) is False  # the move refused: fresh pages instead
full[:] = 2.0  # the unit's range must still be mapped (a segfault here otherwise)
assert (full == 2.0).all() and pool.free_bytes == 0
print("ok")
'''


def test_a_refused_page_move_leaves_the_unit_mapped(tmp_path):
    """When mremap(MREMAP_FIXED) fails after the kernel has unmapped the target (its ENOMEM path), the pool maps
    fresh pages there, so the gather writes into the unit's range instead of crashing the process."""
    import os
    import subprocess
    import sys
    script = tmp_path / "refused.py"
    script.write_text(_REFUSED_MOVE)
    # the subprocess imports the forgegrad this run tests (an installed one in CI, not ../python, which has no _C)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fg.__file__)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() in ("ok", "no mremap"), (proc.returncode, proc.stderr)
