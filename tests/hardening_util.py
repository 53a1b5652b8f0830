"""Helpers for the test_hardening_* files: run a reproducer in a child interpreter, so that a
regression (a crash, a hang) fails one test instead of taking the whole pytest run down."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import forgegrad

# the children import the forgegrad this test run imported (the working tree, or e.g. a sanitizer build)
PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(forgegrad.__file__)))


def run_py(code: str, timeout: float = 60, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""),
               FORGEGRAD_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def check_ok(code: str, timeout: float = 60, expect: str = "OK") -> str:
    """Run ``code``; it must exit 0 (no signal) and print ``expect``. Returns its stdout."""
    r = run_py(code, timeout)
    assert r.returncode == 0, f"child exited {r.returncode} (negative: killed by that signal)\n{r.stdout}\n{r.stderr}"
    assert expect in r.stdout, r.stdout + r.stderr
    return r.stdout
