"""The int8 bench's path handling: a row run on another int8 path leaves the path that was active (a forced one
included), and the AVX2 LeNet row runs both models on AVX2 and restores the SIMD and int8 paths."""
import numpy as np
import pytest

import forgegrad as fg
from forgegrad.bench import int8 as bench_int8
from forgegrad.quantization import int8_path, int8_paths


_HAS_AVX2_AND_ANOTHER = "avx2" in int8_paths() and len(int8_paths()) > 1
_HAS_AVX2 = "avx2" in int8_paths() and fg.get_simd() in ("avx2", "avx512")


@pytest.mark.skipif(not _HAS_AVX2_AND_ANOTHER,
                    reason=f"needs the avx2 int8 path and a second one; this CPU has {int8_paths()}")
def test_a_row_on_another_path_restores_the_forced_path(use_int8_path):
    others = [p for p in int8_paths() if p != "avx2"]
    use_int8_path("avx2")
    fns = bench_int8.gemm_fns(8, 16, 32, 1, path=others[0])
    got = fns["forgegrad"]()
    assert int8_path() == "avx2"
    a = np.asarray(got)
    assert a.shape == (8, 16) and a.dtype == np.int32


@pytest.mark.skipif(not _HAS_AVX2, reason=f"needs AVX2; this CPU's int8 paths are {int8_paths()}, SIMD {fg.get_simd()}")
def test_the_avx2_lenet_row_lowers_both_models_and_restores_the_paths():
    simd, path = fg.get_simd(), int8_path()
    fns = bench_int8.lenet_static_avx2_fns(4)
    q = fns["forgegrad"]()._data
    f = fns["fg fp32"]()._data
    assert (fg.get_simd(), int8_path()) == (simd, path)
    assert set(fns) == {"forgegrad", "fg fp32"}
    _, qmodel, calib = bench_int8._lenet_static(4)
    with fg.no_grad():  # int8 results are the same on every path
        assert np.array_equal(q, qmodel(fg.Tensor(calib[0]))._data)
    assert q.shape == f.shape == (4, 10)
