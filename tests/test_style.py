"""Lint checks that CI runs with the tests: ruff over the Python trees (configured in
pyproject.toml's [tool.ruff]) and clang-format over the C++ / CUDA files listed in
tests/clang_format_files.txt (style in .clang-format). Both tools are pinned in the `test` extra;
without them installed these tests are skipped, naming the missing tool."""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON_TREES = ["python", "tests", "bench", "examples"]


def _listed(name):
    """Paths listed in tests/<name> (one per line, # comments), relative to the repository root."""
    with open(os.path.join(ROOT, "tests", name), encoding="utf-8") as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return [line for line in lines if line]


def _tool(name):
    """The tool on PATH or beside this interpreter (a venv's bin/ that is not activated)."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return shutil.which(name) or (beside if os.access(beside, os.X_OK) else None)


def _ruff():
    if _tool("ruff"):
        return [_tool("ruff")]
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    pytest.skip("ruff is not installed (pip install the `test` extra)")


def test_ruff_finds_nothing():
    proc = subprocess.run(_ruff() + ["check", "--no-cache", "--output-format", "concise", *PYTHON_TREES], cwd=ROOT,
                          capture_output=True, text=True)
    findings = [line for line in proc.stdout.splitlines() if line[:1] not in ("", " ") and ":" in line
                and not line.startswith(("Found ", "[*]", "No fixes"))]
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not findings):
        pytest.fail(f"ruff failed to run (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    assert not findings, "ruff findings (fix them; config in pyproject.toml [tool.ruff]):\n" + "\n".join(findings)


def test_listed_cpp_files_are_clang_formatted():
    exe = _tool("clang-format")
    if exe is None:
        pytest.skip("clang-format is not installed (pip install the `test` extra)")
    files = _listed("clang_format_files.txt")
    missing = [p for p in files if not os.path.isfile(os.path.join(ROOT, p))]
    assert not missing, f"tests/clang_format_files.txt lists files that do not exist: {missing}"
    outside = [p for p in files if not p.startswith(("cpp/", "cuda/"))]
    assert not outside, f"tests/clang_format_files.txt lists files outside cpp/ and cuda/: {outside}"
    if not files:
        return
    proc = subprocess.run([exe, "--dry-run", "--Werror", "--style=file", *files], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, ("clang-format would change these files (run `clang-format -i FILE`):\n"
                                  + proc.stderr[-8000:])
