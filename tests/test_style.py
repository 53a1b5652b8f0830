"""Lint checks that CI runs with the tests: ruff over the Python trees (configured in
pyproject.toml's [tool.ruff]) and clang-format over every C++ / CUDA file under cpp/
and cuda/ (style in .clang-format). Both tools are pinned in the `test` extra;
without them installed these tests fail, naming the missing tool."""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON_TREES = ["python", "tests", "bench", "examples"]


def _tool(name):
    """The tool on PATH or beside this interpreter (a venv's bin/ that is not activated)."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return shutil.which(name) or (beside if os.access(beside, os.X_OK) else None)


def _ruff():
    if _tool("ruff"):
        return [_tool("ruff")]
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    pytest.fail("ruff is not installed: the `test` extra pins it (pip install '.[test]')")


def test_ruff_finds_nothing():
    proc = subprocess.run(_ruff() + ["check", "--no-cache", "--output-format", "concise", *PYTHON_TREES], cwd=ROOT,
                          capture_output=True, text=True)
    findings = [line for line in proc.stdout.splitlines() if line[:1] not in ("", " ") and ":" in line
                and not line.startswith(("Found ", "[*]", "No fixes"))]
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not findings):
        pytest.fail(f"ruff failed to run (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    assert not findings, "ruff findings (fix them; config in pyproject.toml [tool.ruff]):\n" + "\n".join(findings)


def _cpp_files():
    """Every C++ / CUDA source and header under cpp/ and cuda/."""
    out = []
    for top in ("cpp", "cuda"):
        for dirpath, _, names in os.walk(os.path.join(ROOT, top)):
            out += [os.path.relpath(os.path.join(dirpath, n), ROOT) for n in names
                    if n.endswith((".cpp", ".h", ".cu", ".cuh"))]
    return sorted(out)


def test_cpp_files_are_clang_formatted():
    exe = _tool("clang-format")
    if exe is None:
        pytest.fail("clang-format is not installed: the `test` extra pins it (pip install '.[test]')")
    files = _cpp_files()
    assert files, "no C++ sources found under cpp/ and cuda/"
    proc = subprocess.run([exe, "--dry-run", "--Werror", "--style=file", *files], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, ("clang-format would change these files (run `clang-format -i FILE`):\n"
                                  + proc.stderr[-8000:])
