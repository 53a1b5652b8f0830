"""Starting a job: ``forgegrad train ... --ranks N`` re-runs the command under the MPI launcher.

The launcher is the ``mpiexec`` next to the running Python (the one the ``mpich`` wheel installs
into the environment), else the first on PATH. Each rank gets ``FORGEGRAD_NUM_THREADS`` =
cores // N unless the variable (or ``--threads``) is set, so N ranks do not oversubscribe the cores.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import List, Optional

__all__ = ["find_mpiexec", "relaunch", "threads_per_rank"]


def find_mpiexec() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if found is None:
        raise FileNotFoundError('no MPI launcher (mpiexec) found next to Python or on PATH; install one with '
                                'pip install "forgegrad[mpi]" (mpi4py and the mpich wheel)')
    return found


def threads_per_rank(ranks_on_node: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, ranks_on_node))


def relaunch(argv: List[str], ranks: int, extra_env: Optional[dict] = None) -> int:
    """Run ``python -m forgegrad.cli ARGV`` as ``ranks`` MPI ranks; returns the launcher's exit code."""
    cmd = [find_mpiexec(), "-n", str(int(ranks)), sys.executable, "-m", "forgegrad.cli", *argv]
    env = dict(os.environ)
    env.setdefault("FORGEGRAD_NUM_THREADS", str(threads_per_rank(ranks)))
    env.update(extra_env or {})
    return subprocess.call(cmd, env=env)
