import os

import pytest

import forgegrad as fg


def test_cpu_info_reports_paths():
    info = fg.cpu_info()
    assert info["detected_isa"] in ("scalar", "avx2", "avx512")
    assert info["active_isa"] in ("scalar", "avx2", "avx512")
    assert info["num_threads"] >= 1
    assert isinstance(info["avx512_bf16"], bool)
    assert info["bf16_gemm"] == ("avx512_bf16" if info["avx512_bf16"] and info["active_isa"] == "avx512" else "float32")


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
    # Kernels allocate scratch inside parallel regions; an exception escaping a worker thread
    # would terminate the process. It must surface as MemoryError, and the pool must still work.
    from forgegrad import _C
    threads(nthreads)
    with pytest.raises(MemoryError):
        _C.runtime._check_region_alloc(5, 1 << 60, dynamic)
    with pytest.raises(MemoryError):
        _C.runtime._check_region_alloc(5, (1 << 64) - 1, dynamic)  # byte count would overflow
    assert _C.runtime._check_region_alloc(5, 1000, dynamic) == 5


@pytest.mark.parametrize("nthreads", [2, 3])
def test_every_part_of_back_to_back_regions_runs_once(threads, nthreads):
    # The caller and the workers claim parts with one compare-exchange of the region's ticket (no lock): over many
    # regions in a row, of one part to many, each part must run exactly once, and only parts of the current region.
    from forgegrad import _C
    threads(nthreads)
    for tasks in (1, 2, 3, 7, 64, 1000):
        for dynamic in (False, True):
            for _ in range(40):
                assert _C.runtime._check_region_alloc(tasks, 16, dynamic) == tasks


def _run_py(code, env_extra=None, timeout=120):
    import os
    import subprocess
    import sys
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


def test_thread_pool_works_in_a_forked_child():
    # The pool's workers do not exist in a fork()ed child (DataLoader workers fork): the child must
    # build its own pool instead of waiting forever for the parent's threads.
    code = """
import os, sys
import numpy as np
import forgegrad as fg
fg.set_num_threads(2)
rng = np.random.default_rng(0)
a = fg.Tensor(rng.standard_normal((300, 200)).astype(np.float32))
b = fg.Tensor(rng.standard_normal((200, 500)).astype(np.float32))
ref = (a @ b).numpy()
pid = os.fork()
if pid == 0:
    ok = all(np.array_equal((a @ b).numpy(), ref) for _ in range(20))
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
"""
    out = _run_py(code, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["child", "0"]


def test_regions_from_several_python_threads_are_bit_identical(threads):
    # One region at a time owns the pool; regions started meanwhile by other threads run inline
    # with the same cut, so every result equals the 1-thread one.
    import threading

    import numpy as np
    rng = np.random.default_rng(1)
    a = fg.Tensor(rng.standard_normal((256, 320)).astype(np.float32))
    b = fg.Tensor(rng.standard_normal((320, 288)).astype(np.float32))
    threads(1)
    ref = (a @ b).numpy()
    threads(2)
    bad = []

    def work():
        for _ in range(30):
            if not np.array_equal((a @ b).numpy(), ref):
                bad.append(1)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad


def test_malloc_tuning_reported_and_can_be_turned_off():
    info = fg.cpu_info()
    assert info["threads_backend"] == "forgegrad pool"
    code = "import forgegrad as fg; print(fg.cpu_info()['malloc_tuning'])"
    on = _run_py(code, {"FORGEGRAD_MALLOC_TUNING": "1"})
    off = _run_py(code, {"FORGEGRAD_MALLOC_TUNING": "0"})
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert on.stdout.strip() == "mmap_threshold=32MiB trim_threshold=128MiB"
    assert off.stdout.strip() == "off (FORGEGRAD_MALLOC_TUNING=0)"


def test_training_step_does_not_page_fault():
    # Each LeNet step allocates and frees the same few-MiB buffers; with glibc's defaults the step
    # usually faults them in again (~2,900 minor faults a step at batch 64; 0 with the tuning).
    code = """
import resource
import numpy as np
import forgegrad as fg
from forgegrad.bench._steps import classifier_step_fns
from forgegrad.models import LeNet
fg.set_num_threads(1)
rng = np.random.default_rng(0)
x = rng.random((64, 1, 28, 28), dtype=np.float32)
y = rng.integers(0, 10, 64)
step = classifier_step_fns(LeNet(1, 10, 28), None, x, y, None)["forgegrad"]
for _ in range(4):
    step()
counts = []
for _ in range(3):  # three windows of 3 steps: the least, so one burst of faults from outside (the kernel
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # compacting memory) does not decide it
    for _ in range(3):
        step()
    counts.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 3)
print(min(counts))
"""
    tuned = _run_py(code, {"FORGEGRAD_MALLOC_TUNING": "1"})
    assert tuned.returncode == 0, tuned.stderr
    # A few hundred faults at most remain (thread stacks, the interpreter). Without the tuning it is
    # 1,500-4,700 a step in most runs, but glibc's dynamic mmap threshold sometimes settles on its
    # own (0 faults, depending on the heap left by the imports), so the untuned run is not compared.
    assert float(tuned.stdout) < 300, tuned.stdout


def test_rnn_training_on_a_busy_machine_is_bit_identical(threads):
    # With other processes spinning on every core the pool's workers get descheduled, and it backs
    # off: small regions run on the caller alone for a while, then the workers are probed again.
    # Switching between the two mid-op must not change a bit of the results.
    import os
    import subprocess
    import sys

    import numpy as np
    from forgegrad import nn

    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 5, 24)).astype(np.float32)

    def grads():
        fg.manual_seed(0)
        layer = nn.LSTM(24, 40)
        out, _ = layer(fg.tensor(x))
        (out * out).mean().backward()
        return [p.grad.numpy().copy() for p in layer.parameters()] + [out.numpy().copy()]

    threads(1)
    ref = grads()
    threads(2)
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(min(os.cpu_count() or 2, 4))]
    try:
        for _ in range(15):
            for got, want in zip(grads(), ref):
                np.testing.assert_array_equal(got, want)
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def test_idle_pool_workers_sleep(threads):
    # After a region the workers spin ~50 us, yield until ~1 ms, then sleep: an idle process must
    # not burn a core (on a busy machine that core belongs to someone else).
    import resource
    import time

    import numpy as np
    threads(2)
    a = fg.Tensor(np.ones((256, 256), np.float32))
    (a @ a).numpy()  # starts the pool's worker

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    c0 = cpu()
    time.sleep(0.3)
    assert cpu() - c0 < 0.05


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"),
                    reason="no /proc/thread-self/schedstat: the caller's test needs Linux's run-queue times")
def test_pool_backs_off_when_the_caller_waits_for_its_core(threads):
    # The caller shares one CPU with a process that never sleeps: it waits on the run queue (Linux's
    # schedstat counts it), and small regions must then run on the caller alone for a while.
    import subprocess
    import sys
    import time

    from forgegrad import _C
    threads(2)
    cpu = min(os.sched_getaffinity(0))
    old = os.sched_getaffinity(0)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(spinner.pid, {cpu})
        os.sched_setaffinity(0, {cpu})  # this thread only
        seen = set()
        deadline = time.monotonic() + 5
        while 1 not in seen and time.monotonic() < deadline:
            seen.add(_C.runtime._threads_for(1000))
            sum(range(2000))  # ~20 us of this thread's own work between regions
    finally:
        os.sched_setaffinity(0, old)
        spinner.kill()
        spinner.wait()
    assert 1 in seen
    assert _C.runtime._threads_for(1 << 40) == 2  # large regions keep their threads
