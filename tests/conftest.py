import os

import numpy as np
import pytest

import forgegrad as fg

_ISAS = ["scalar", "avx2", "avx512"]
SIMD_PATHS = [p for p in _ISAS if _ISAS.index(p) <= _ISAS.index(fg.cpu_info()["detected_isa"])]


@pytest.fixture(params=SIMD_PATHS)
def simd_path(request):
    """Runs the test once per SIMD path this CPU supports, restoring the default afterwards."""
    before = fg.get_simd()
    fg.set_simd(request.param)
    yield request.param
    fg.set_simd(before)


@pytest.fixture
def threads():
    """Set the thread count inside a test; restored afterwards."""
    before = fg.get_num_threads()
    yield fg.set_num_threads
    fg.set_num_threads(before)


@pytest.fixture
def use_int8_path():
    """Set the int8 kernel path inside a test (forgegrad.quantization.set_int8_path); the default
    path is restored afterwards."""
    from forgegrad.quantization import set_int8_path
    yield set_int8_path
    set_int8_path(None)


@pytest.fixture
def rng():
    return np.random.default_rng(int(os.environ.get("FORGEGRAD_TEST_SEED", "1234")))


@pytest.fixture
def keep_num_threads():
    """Restores forgegrad's thread count after a test that changes it (e.g. an example's --threads)."""
    before = fg.get_num_threads()
    yield
    fg.set_num_threads(before)


@pytest.fixture(scope="module")
def torch_one_thread():
    """torch's reference runs single-threaded: its OpenMP workers spin-wait and crawl on a busy
    2-core CI machine, and small shapes gain nothing from them. Use per module with
    ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The op x check coverage table of tests/test_op_registry.py, when it ran."""
    import sys
    mod = sys.modules.get("test_op_registry") or sys.modules.get("tests.test_op_registry")
    if mod is None or not any(v in ("ok", "FAIL") for v in mod.COVERAGE.values()):
        return  # the generated checks did not run
    from forgegrad.ops.registry import CHECKS
    cov = mod.COVERAGE
    names = sorted({op for op, _ in cov})
    width = max(len(n) for n in names)
    mark = {"ok": "ok", "FAIL": "FAIL"}
    tr = terminalreporter
    tr.section("op registry coverage (ops x generated checks)")
    tr.write_line(" " * (width + 2) + "  ".join(f"{c:8s}" for c in CHECKS))
    gaps = []
    for n in names:
        cells = []
        for c in CHECKS:
            v = cov.get((n, c), "-")
            if v.startswith("gap: "):
                gaps.append(f"{n}/{c}: {v[5:]}")
                v = "gap"
            cells.append(f"{mark.get(v, v):8s}")
        tr.write_line(f"{n:{width}s}  " + "  ".join(cells))
    if gaps:
        tr.write_line("gaps (checks that do not apply to an op, and why):")
        for g in gaps:
            tr.write_line("  " + g)
