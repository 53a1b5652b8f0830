"""The fuzz harness's limits on a case (memory, size of a huge valid input) and how it sorts a child that
died, with and without the sanitizers (tools/sanitize.sh), and the two ops whose huge valid cases ran out
of time or memory under ASan (docs/reliability.md, the sanitizer run of 2026-12-06)."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import forgegrad as fg
import fuzz_util
import fuzz_worker

torch = pytest.importorskip("torch")
HERE = os.path.dirname(os.path.abspath(__file__))


def test_classify_death():
    """A child that died without answering is a failure in every case; the memory limit's end and a
    SIGKILL (the harness kills only a hung child, reported as a hang) are "oom", the rest "crash"."""
    assert fuzz_util.classify_death(-9, "")[0] == "oom"
    assert "OOM killer" in fuzz_util.classify_death(-9, "")[1]
    assert fuzz_util.classify_death(-11, "") == ("crash", "killed by signal 11")
    assert fuzz_util.classify_death(-6, "") == ("crash", "killed by signal 6")
    hard = "==7==AddressSanitizer: hard rss limit exhausted (9216Mb vs 9300Mb)\n"
    outcome, what = fuzz_util.classify_death(1, hard)
    assert outcome == "oom" and "9216Mb" in what
    # a sanitizer report beside it is a crash, whatever else the log says
    assert fuzz_util.classify_death(1, hard + "==7==ERROR: AddressSanitizer: heap-buffer-overflow")[0] == "crash"
    assert fuzz_util.classify_death(1, hard + "x.cpp:3:5: runtime error: signed integer overflow")[0] == "crash"
    assert fuzz_util.classify_death(1, "") == ("crash", "exited 1")


def test_child_env_bounds_the_rss_under_the_sanitizers():
    base = {"ASAN_OPTIONS": "detect_leaks=0:log_path=/tmp/x/asan", "FORGEGRAD_FUZZ_MEMORY_GB": "3",
            "PYTHONPATH": "elsewhere"}
    plain = fuzz_util.child_env(base)
    assert plain["ASAN_OPTIONS"] == base["ASAN_OPTIONS"]  # without sanitizers the child sets RLIMIT_AS itself
    assert plain["PYTHONPATH"].endswith(os.pathsep + "elsewhere")
    env = fuzz_util.child_env(dict(base, FORGEGRAD_FUZZ_SANITIZED="1"))
    opts = dict(kv.split("=", 1) for kv in env["ASAN_OPTIONS"].split(":"))
    assert opts["soft_rss_limit_mb"] == "3072" and opts["hard_rss_limit_mb"] == "4608"
    assert opts["allocator_may_return_null"] == "1" and opts["log_path"] == "/tmp/x/asan"
    none = fuzz_util.child_env(dict(base, FORGEGRAD_FUZZ_SANITIZED="1", FORGEGRAD_FUZZ_MEMORY_GB="0"))
    assert "rss_limit" not in none["ASAN_OPTIONS"]


def test_sanitizer_log_of_a_child(tmp_path):
    (tmp_path / "asan.123").write_text("==123==AddressSanitizer: hard rss limit exhausted\n")
    (tmp_path / "ubsan.123").write_text("x.cpp:1:1: runtime error: shift\n")
    env = {"ASAN_OPTIONS": f"a=1:log_path={tmp_path}/asan:b=2", "UBSAN_OPTIONS": f"log_path={tmp_path}/ubsan"}
    log = fuzz_util.sanitizer_log(123, env)
    assert "hard rss limit" in log and "runtime error" in log
    assert fuzz_util.sanitizer_log(124, env) == ""


def test_a_sigkilled_child_fails_its_case(monkeypatch):
    """The kill the OOM killer deals (SIGKILL, the child gone mid-case) is a failed case, "oom", never a pass."""
    monkeypatch.setattr(fuzz_util, "STATS", fuzz_util.collections.Counter())
    monkeypatch.setattr(fuzz_util, "FAILURES", [])
    monkeypatch.delenv("FORGEGRAD_FUZZ_REPORT", raising=False)
    w = fuzz_util.Worker().ensure()
    try:
        os.kill(w.proc.pid, signal.SIGKILL)
        w.proc.wait()
        reply = w.run({"target": "op:abs", "base": 0, "mutations": [["nan", 0, 0]], "seed": 1, "raw": False})
    finally:
        w.close()
    assert not reply["ok"] and reply["outcome"] == "oom", reply
    assert fuzz_util.STATS == {"oom": 1} and len(fuzz_util.FAILURES) == 1


@pytest.mark.parametrize("sanitized, elements", [("0", 2 ** 26), ("1", 2 ** 22)])
def test_bounded_huge_inputs_are_smaller_under_the_sanitizers(sanitized, elements):
    code = ("import numpy as np, fuzz_mutate as M; M.BOUNDED_HUGE = True; "
            "a = M.mutate_array(np.ones((2, 3, 5, 2), np.float32), 'overflow', 3, None); "
            "print(M.BOUNDED_HUGE_ELEMENTS, a.size)")
    env = dict(os.environ, FORGEGRAD_FUZZ_SANITIZED=sanitized, PYTHONPATH=HERE)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    cap, size = map(int, out.split())
    assert cap == elements and elements < size <= elements + 30


@pytest.mark.parametrize("block", [7, 64])
def test_close_in_blocks_judges_as_at_once(monkeypatch, block):
    """fuzz_worker._close compares a huge result in blocks; the verdict and the count are those of the
    comparison at once (the tolerance scaled by the largest finite reference value of all blocks)."""
    monkeypatch.setattr(fuzz_worker, "_BLOCK", block)
    rng = np.random.default_rng(3)
    for trial in range(40):
        want = rng.standard_normal((5, 41)).astype(np.float32)
        want.reshape(-1)[rng.integers(want.size)] = (np.nan, np.inf, 3e4, 1.0)[trial % 4]
        got = want.copy()
        got.reshape(-1)[rng.integers(0, want.size, size=trial % 5)] += np.float32(1e-3 * (trial % 3))
        w64, g64 = want.astype(np.float64), got.astype(np.float64)
        scale = float(np.max(np.abs(w64[np.isfinite(w64)]), initial=1.0))
        bad = int((~np.isclose(g64, w64, rtol=1e-4, atol=1e-5 * max(1.0, scale), equal_nan=True)).sum())
        if bad:
            with pytest.raises(fuzz_worker.Failure, match=f"{bad} of {want.size} values differ"):
                fuzz_worker._close(got, want, 1e-4, 1e-5, "r")
        else:
            fuzz_worker._close(got, want, 1e-4, 1e-5, "r")


@pytest.mark.parametrize("name", ["quantile", "nanquantile"])
@pytest.mark.parametrize("interpolation", ["linear", "lower", "higher", "midpoint", "nearest"])
def test_quantile_of_many_quantiles(name, interpolation):
    """op:nanquantile, [["alias", 37, 2], ["overflow", 39, 31]] (base 4, seed 110378): 2**26 + 1 quantiles
    of 4 rows took 93 s in forgegrad (torch ~5 s), past the fuzz's 180 s under ASan with the check; the
    gathers index the sorted rows flat now. Many quantiles, NaN rows and a row of NaN, as torch."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 9)).astype(np.float32)
    x[1, 2] = x[3, 0] = np.nan
    x[4] = np.nan
    q = np.concatenate([[0.0, 1.0, 0.5, 0.25], rng.random(40000)]).astype(np.float32)
    xt = fg.tensor(x, requires_grad=True)
    got = getattr(fg, name)(xt, fg.tensor(q), dim=1, interpolation=interpolation)
    tx = torch.tensor(x, requires_grad=True)
    want = getattr(torch, name)(tx, torch.tensor(q), dim=1, interpolation=interpolation)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-6, atol=1e-6, equal_nan=True)
    g = rng.standard_normal(want.shape).astype(np.float32)
    got.backward(fg.tensor(g))
    want.backward(torch.tensor(g))
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-3, equal_nan=True)


def test_the_nanquantile_case_of_the_sanitizer_run():
    """The very case through the fuzz child's code, at the sanitizers' size (2**22 + 1 quantiles): equal to
    torch."""
    case = {"mutations": [["alias", 37, 2], ["overflow", 39, 31]], "base": 4, "raw": True, "seed": 110378,
            "target": "op:nanquantile"}
    code = ("import json, sys, fuzz_worker as W; "
            f"print(json.dumps(W.run_case(json.loads({json.dumps(json.dumps(case))}), {{}})))")
    env = dict(os.environ, FORGEGRAD_FUZZ_SANITIZED="1",
               PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1])[0] == "equal"
