import pytest

import forgegrad as fg


def test_cpu_info_reports_paths():
    info = fg.cpu_info()
    assert info["detected_isa"] in ("scalar", "avx2", "avx512")
    assert info["active_isa"] in ("scalar", "avx2", "avx512")
    assert info["num_threads"] >= 1


def test_set_simd_round_trip(simd_path):
    assert fg.get_simd() == simd_path
    assert fg.cpu_info()["active_isa"] == simd_path


def test_set_simd_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown SIMD path"):
        fg.set_simd("sse9")
    with pytest.raises(TypeError):
        fg.set_simd(3)


def test_thread_count(threads):
    threads(3)
    assert fg.get_num_threads() == 3
    with pytest.raises(ValueError):
        fg.set_num_threads(0)
    with pytest.raises(TypeError):
        fg.set_num_threads(1.5)


def test_env_var_forces_path_in_subprocess():
    import subprocess
    import sys
    code = "import forgegrad as fg; print(fg.cpu_info()['active_isa'], fg.get_num_threads())"
    env = dict(__import__("os").environ, FORGEGRAD_SIMD="scalar", FORGEGRAD_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["scalar", "3"]


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("nthreads", [1, 2, 3])
def test_allocation_failure_inside_parallel_region_is_memoryerror(threads, nthreads, dynamic):
    # Kernels allocate scratch inside parallel regions; an exception escaping an OpenMP region
    # would terminate the process. It must surface as MemoryError, and the pool must still work.
    from forgegrad import _C
    threads(nthreads)
    with pytest.raises(MemoryError):
        _C.runtime._check_region_alloc(5, 1 << 60, dynamic)
    with pytest.raises(MemoryError):
        _C.runtime._check_region_alloc(5, (1 << 64) - 1, dynamic)  # byte count would overflow
    assert _C.runtime._check_region_alloc(5, 1000, dynamic) == 5
