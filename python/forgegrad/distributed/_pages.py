"""A pool of memory pages that FullyShardedDataParallel's units borrow while they are gathered (Linux).

A unit's full vector lives at a fixed address (the parameters, and the arrays autograd saved, are numpy
views of it), so a gather cannot simply be pointed at another buffer. Freeing a unit used to return its
pages to the OS (``madvise(MADV_DONTNEED)``), and the next gather faulted every 4 KB page in again, the
kernel zeroing each one: on the machine the benchmark ran on, 6 ms per 4 MB unit against 0.3 ms to
overwrite warm pages. Instead, freeing a unit *moves* its pages into this pool with
``mremap(MREMAP_DONTUNMAP)`` (the page tables move; the unit's range stays mapped and empty, so its views
read zeros as before), and the next gather of a unit of the same size moves them onto that unit's range
with ``mremap(MREMAP_FIXED)``: two system calls and no page fault, whatever the unit's size.

The pool keeps at most ``capacity`` bytes, counting the pages gathered now: free pages are kept only
while pooled + gathered bytes stay within it (the smallest runs go back to the OS first, being the
cheapest to fault in again), so a rank never holds more full-parameter memory than max(capacity, what
is gathered at once). Runs are matched by exact size, so with units of one size (transformer blocks,
equal layers) the pool never holds more than the most units ever gathered at once, and every gather
after the first ones reuses pages. FullyShardedDataParallel sets the capacity to one largest unit more
than it gathers at once (2 units; 3 with prefetch): the spare lets a large run wait in the pool while
a smaller unit is gathered. A miss is a gather into fresh pages, as without the pool. Where ``mremap``
is missing (not Linux, or a kernel before 5.7 without ``MREMAP_DONTUNMAP``) the pool reports itself
unavailable and units fall back to ``MADV_DONTNEED``.
"""
from __future__ import annotations

import ctypes
import mmap
import sys
import weakref
from collections import OrderedDict
from typing import Optional

import numpy as np

PAGE = mmap.PAGESIZE
_MREMAP_MAYMOVE, _MREMAP_FIXED, _MREMAP_DONTUNMAP = 1, 2, 4
_PROT_READ_WRITE, _MAP_FIXED = 3, 0x10  # Linux's values (mmap has no MAP_FIXED before Python 3.13)
_FAILED = ctypes.c_void_p(-1).value  # MAP_FAILED as ctypes returns it

_libc = None


def _load_libc():
    """libc's mremap and munmap through ctypes, or None where moving pages does not work here (tried
    once on a page of our own)."""
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's among them
                lib.mremap.restype = ctypes.c_void_p
                lib.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int,
                                       ctypes.c_void_p]
                lib.munmap.restype = ctypes.c_int
                lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
                lib.mmap.restype = ctypes.c_void_p
                lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                     ctypes.c_long]
            except (OSError, AttributeError):
                return None
            probe = mmap.mmap(-1, PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            view = (ctypes.c_char * PAGE).from_buffer(probe)
            view[0] = b"x"
            addr = ctypes.addressof(view)
            moved = lib.mremap(addr, PAGE, PAGE, _MREMAP_MAYMOVE | _MREMAP_DONTUNMAP, None)
            if moved not in (None, _FAILED):
                ok = ctypes.string_at(moved, 1) == b"x" and view[0] == b"\0"  # moved, and the range left empty
                back = lib.mremap(moved, PAGE, PAGE, _MREMAP_MAYMOVE | _MREMAP_FIXED, addr)
                if back != addr:
                    lib.munmap(moved, PAGE)
                elif ok and view[0] == b"x":
                    _libc = lib
            del view
            probe.close()
    return _libc or None


def rounded(nbytes: int) -> int:
    """``nbytes`` rounded up to whole pages (the size a unit's mapping really has)."""
    return -(-nbytes // PAGE) * PAGE


def _release_all(libc, free) -> None:
    for addr, size in free.values():
        libc.munmap(addr, size)
    free.clear()


class PagePool:
    """Free page runs keyed by their address, oldest first, each ``(address, bytes)``; see the module
    docstring. ``take``/``give`` are given a unit's page-aligned address and page-rounded size."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.libc = _load_libc()
        self.free: "OrderedDict[int, tuple]" = OrderedDict()
        self.free_bytes = 0
        self.gathered = 0  # bytes of units gathered now (borrowed pages or fresh ones)
        self.hits = self.misses = 0
        if self.libc is not None:  # the runs still pooled go back to the OS with the pool
            weakref.finalize(self, _release_all, self.libc, self.free)

    @property
    def available(self) -> bool:
        return self.libc is not None

    def take(self, addr: int, size: int) -> bool:
        """A unit at ``addr`` is being gathered: move a pooled run of ``size`` bytes onto it (True), or
        leave its empty range to fault fresh pages in (False)."""
        self.gathered += size
        run = next((a for a, (_, s) in self.free.items() if s == size), None)
        if run is not None:
            del self.free[run]
            self.free_bytes -= size
            got = self.libc.mremap(run, size, size, _MREMAP_MAYMOVE | _MREMAP_FIXED, addr)
            if got == addr:
                self.hits += 1
                return True
            # not expected (out of memory?): the run goes back to the OS and the unit faults fresh pages in, on
            # a range mapped again, since the kernel may have unmapped it before failing (mremap_to unmaps the
            # target first)
            self.libc.munmap(run, size)
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_FIXED
            if self.libc.mmap(addr, size, _PROT_READ_WRITE, flags, -1, 0) != addr:
                raise MemoryError(f"FullyShardedDataParallel: cannot map {size} bytes for a unit's parameters "
                                  f"(errno {ctypes.get_errno()})")
        self.misses += 1
        self._trim()
        return False

    def give(self, addr: int, size: int, mapping: mmap.mmap, offset: int = 0) -> None:
        """The unit at ``addr`` is freed: keep its pages (its range stays mapped, reading zeros) when the
        pool has room, else return them to the OS through ``mapping.madvise(MADV_DONTNEED)``."""
        self.gathered -= size
        if not self._trim(size, size):  # no room, short of dropping runs larger than this one
            mapping.madvise(mmap.MADV_DONTNEED, offset, size)
            return
        got = self.libc.mremap(addr, size, size, _MREMAP_MAYMOVE | _MREMAP_DONTUNMAP, None)
        if got in (None, _FAILED):  # not expected (out of address space?): return the pages instead
            mapping.madvise(mmap.MADV_DONTNEED, offset, size)
            return
        self.free[got] = (got, size)
        self.free_bytes += size

    def _trim(self, incoming: int = 0, largest: Optional[int] = None) -> bool:
        """Return runs to the OS until pooled + gathered (+ ``incoming``) fit the capacity: the smallest
        first (cheap to fault in again), the oldest among equals, none larger than ``largest``. Whether
        it fits now."""
        need = self.free_bytes + incoming + self.gathered - self.capacity
        if need <= 0:
            return True
        victims, freed = [], 0
        for addr, (_, size) in sorted(self.free.items(), key=lambda kv: kv[1][1]):  # stable: oldest first
            if freed >= need or (largest is not None and size > largest):
                break
            victims.append(addr)
            freed += size
        if freed < need and largest is not None:
            return False
        for addr in victims:
            _, size = self.free.pop(addr)
            self.libc.munmap(addr, size)
            self.free_bytes -= size
        return freed >= need

    def clear(self) -> None:
        """Return every pooled page to the OS."""
        if self.libc is not None:
            _release_all(self.libc, self.free)
        self.free_bytes = 0


_NAN = np.full((), np.nan, np.float32)


class FreedArray(np.ndarray):
    """What a parameter of a freed unit holds instead of its view of the unit's pages: NaNs of its shape
    (stride 0, read-only: no memory). ``fsdp_freed`` says which parameter it is; forgegrad's op dispatch
    raises it as a RuntimeError when an op reads one (_op_dispatch.device_of_args: an ndarray subclass already
    leaves the dispatch's fast path, so the check costs the ordinary ops nothing). numpy itself reads NaN."""

    fsdp_freed = ""

    def __array_finalize__(self, obj) -> None:
        self.fsdp_freed = getattr(obj, "fsdp_freed", "")


def freed_array(shape, message: str) -> FreedArray:
    """A :class:`FreedArray` of ``shape`` whose read is the error ``message``."""
    a = np.lib.stride_tricks.as_strided(_NAN, shape, (0,) * len(shape), writeable=False).view(FreedArray)
    a.fsdp_freed = message
    return a
