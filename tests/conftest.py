import os

import numpy as np
import pytest

import forgegrad as fg

SIMD_PATHS = [p for p in ("scalar", "avx2", "avx512")
              if ["scalar", "avx2", "avx512"].index(p) <= ["scalar", "avx2", "avx512"].index(fg.cpu_info()["detected_isa"])]


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
def rng():
    return np.random.default_rng(int(os.environ.get("FORGEGRAD_TEST_SEED", "1234")))
