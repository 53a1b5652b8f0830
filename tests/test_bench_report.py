"""The benchmark report on small synthetic results: results.json schema, machine fingerprint, tables,
speed-up / summary charts, and the run-to-run comparison (its rule and the `bench compare` command).
No timing assertions: the rows are made up, except for one tiny real timing of trivial calls."""
import json
import os
import statistics

import pytest

from forgegrad.bench import Workload, _compare, _fingerprint, time_workloads
from forgegrad.cli import _charts, _report, main

PNG = b"\x89PNG\r\n\x1a\n"


def row(suite, workload, threads, **samples):
    """A benchmark row with per-round samples (seconds) per runtime; None marks an absent runtime."""
    return {"suite": suite, "workload": workload, "threads": threads,
            "seconds": {k: (sorted(v)[len(v) // 2] if v else None) for k, v in samples.items()},
            "samples": dict(samples), "clock": "cpu"}


def synthetic_rows():
    return [
        row("alpha", "square 256", 1, forgegrad=[1.0e-3, 1.1e-3, 0.9e-3], numpy=[2.0e-3, 2.2e-3, 1.8e-3],
            torch=[1.5e-3, 1.6e-3, 1.4e-3]),
        row("alpha", "square 256", 2, forgegrad=[0.6e-3, 0.7e-3, 0.5e-3], numpy=[0.5e-3, 0.5e-3, 0.6e-3],
            torch=[1.0e-3, 1.2e-3, 0.9e-3]),
        row("alpha", "a very long workload name that has to be wrapped onto several lines, batch 64, Adam", 1,
            forgegrad=[5e-3, 5e-3, 5e-3], torch=[50e-3, 55e-3, 45e-3]),
        row("beta", "inference batch 1", 1, forgegrad=[2e-5, 2e-5, 3e-5], torch=None,
            onnxruntime=[1e-5, 1e-5, 1e-5]),
    ]


FINGERPRINT = {"time_utc": "2026-12-02T00:00:00Z", "command": "forgegrad bench all", "platform": "Linux x86_64",
               "cpu": {"model": "Test CPU", "logical_cores": 2, "usable_cores": 2,
                       "flags": {"avx512f": True, "amx_tile": True}, "amx": True, "vnni": False},
               "forgegrad_runtime": {"active_isa": "avx512", "detected_isa": "avx512", "FORGEGRAD_SIMD": None},
               "versions": {"forgegrad": "0.1.0", "numpy": "2.0", "torch": None},
               "blas": [{"user_api": "blas", "internal_api": "openblas", "version": "0.3", "num_threads": 2}],
               "thread_env": {"OMP_NUM_THREADS": "2"}, "git": {"commit": "abc123def4567890", "dirty": True}}


# ---- statistics ------------------------------------------------------------------------------------------
def test_speedup_is_per_round_with_the_ratio_of_medians():
    r = synthetic_rows()[0]
    s = _compare.speedup(r, "numpy")
    assert s["median"] == pytest.approx(2.0)  # 2.0 ms / 1.0 ms
    assert s["min"] == pytest.approx(1.8e-3 / 0.9e-3) and s["max"] == pytest.approx(2.2e-3 / 1.1e-3)
    assert s["n"] == 3
    assert _compare.speedup(synthetic_rows()[3], "torch") is None  # torch absent on that row
    # a row stored without samples (older results.json) still has a one-sample figure
    old = {"workload": "w", "seconds": {"forgegrad": 1.0, "torch": 3.0}}
    assert _compare.speedup(old, "torch")["median"] == 3.0 and _compare.row_samples(old, "torch") == [3.0]


def test_time_workloads_keeps_every_round():
    w = Workload("noop", ("forgegrad", "torch", "numpy"),
                 lambda _t: {"forgegrad": lambda: None, "torch": lambda: None, "numpy": None})
    (r,) = time_workloads([w], [1], repeat=4, min_time=0.0)
    assert len(r["samples"]["forgegrad"]) == len(r["samples"]["torch"]) == 4
    assert r["samples"]["numpy"] is None and r["seconds"]["numpy"] is None
    assert r["seconds"]["forgegrad"] == statistics.median(r["samples"]["forgegrad"])
    assert r["clock"] in ("cpu", "wall")


# ---- results.json, fingerprint, report -------------------------------------------------------------------
def test_report_writes_schema_fingerprint_tables_and_images(tmp_path):
    rows = synthetic_rows()
    written = _report.write(rows, str(tmp_path), title="synthetic", fingerprint=FINGERPRINT)
    names = {os.path.basename(p) for p in written}
    assert {"report.md", "results.json", "summary.png", "speedup_alpha.png", "speedup_beta.png"} <= names
    for name in ("summary.png", "speedup_alpha.png", "speedup_beta.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["schema"] == _compare.SCHEMA and res["kind"] == "bench"
    assert res["fingerprint"] == FINGERPRINT
    assert res["results"][0]["samples"]["forgegrad"] == [1.0e-3, 1.1e-3, 0.9e-3]
    assert _compare.load_results(str(tmp_path / "results.json"))["results"] == rows
    md = (tmp_path / "report.md").read_text()
    assert "Test CPU" in md and "AMX yes" in md and "`OMP_NUM_THREADS=2`" in md and "abc123def456" in md
    assert "torch absent" in md  # the fingerprint's versions
    assert ("| alpha | square 256 | 1 | 1.000 ms ±10% | 2.000 ms ±10% | 1.500 ms ±7% | - | 2.00x (2.00-2.00) | "
            "1.50x (1.45-1.56) | - |") in md
    assert ("| beta | inference batch 1 | 1 | 20.0 us ±25% | - | absent | 10.0 us ±0% | - | - | "
            "0.50x (0.33-0.50) |") in md
    assert "![summary.png](summary.png)" in md and "![speedup_alpha.png](speedup_alpha.png)" in md


def test_charts_skip_rows_without_a_reference(tmp_path):
    lonely = [row("solo", "only forgegrad", 1, forgegrad=[1e-3, 1e-3])]
    assert _charts.speedup_chart(lonely, str(tmp_path / "x.png"), "t") is None
    assert _charts.summary_chart(lonely, str(tmp_path / "y.png")) is None
    assert not os.listdir(tmp_path)
    label = _charts.wrap_label("word " * 40, width=20, max_lines=3)
    assert len(label.split("\n")) == 3 and all(len(line) <= 20 for line in label.split("\n"))


def test_fingerprint_reads_cpu_flags_env_and_versions(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Fake Xeon\nflags\t\t: fpu avx2 fma avx512f amx_tile "
                    "avx512_vnni\n\nprocessor\t: 1\nmodel name\t: other\n")
    c = _fingerprint.cpu(str(info))
    assert c["model"] == "Fake Xeon" and c["amx"] is True and c["vnni"] is True
    assert c["flags"]["avx512f"] and not c["flags"]["amx_int8"]
    assert _fingerprint.cpu(str(tmp_path / "missing"))["flags"] is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("FORGEGRAD_SIMD", "avx2")
    monkeypatch.setenv("UNRELATED_VAR", "x")
    env = _fingerprint.thread_env()
    assert env["OMP_NUM_THREADS"] == "3" and env["FORGEGRAD_SIMD"] == "avx2" and "UNRELATED_VAR" not in env
    fp = _fingerprint.fingerprint()
    for key in ("time_utc", "command", "cpu", "forgegrad_runtime", "versions", "blas", "thread_env", "git"):
        assert key in fp
    assert fp["versions"]["numpy"] and fp["forgegrad_runtime"]["active_isa"] in ("scalar", "avx2", "avx512")
    json.dumps(fp)  # JSON-ready
    assert len(_fingerprint.summary_lines({})) == 8  # an older file without a fingerprint still renders


# ---- comparison rule -------------------------------------------------------------------------------------
BASE = [1.00, 1.02, 0.98, 1.01, 0.99]


@pytest.mark.parametrize("new, verdict", [
    ([1.01, 0.99, 1.00, 1.03, 0.97], "within noise"),   # the same figure
    ([2.0, 2.1, 1.9, 2.0, 2.05], "regression"),          # twice as slow, far outside the band
    ([1.08, 1.09, 1.07, 1.08, 1.1], "within noise"),     # outside the band but below the 10 % threshold
    ([0.5, 0.52, 0.49, 0.5, 0.51], "improvement"),
])
def test_judge_rule(new, verdict):
    assert _compare.judge(BASE, new)["verdict"] == verdict


def test_judge_a_noisy_old_run_absorbs_a_large_change():
    noisy_old = [1.0, 1.6, 0.9, 1.5, 1.05]   # rounds up to 1.6
    j = _compare.judge(noisy_old, [1.3, 1.35, 1.25])
    assert j["change"] > 0.1 and j["verdict"] == "within noise"
    assert _compare.judge(noisy_old, [1.3, 1.35, 1.25], noise=0.0, threshold=0.5)["verdict"] == "within noise"
    with pytest.raises(ValueError, match="noise and threshold"):
        _compare.judge(BASE, BASE, noise=-1)


def test_compare_results_matches_rows_and_separates_code_from_machine():
    old = [row("s", "w1", 1, forgegrad=BASE, torch=[2.0] * 5), row("s", "gone", 1, forgegrad=BASE),
           row("s", "no fg", 1, forgegrad=None, torch=[1.0])]
    # the whole machine got twice as slow: forgegrad and torch alike
    new = [row("s", "w1", 1, forgegrad=[2 * v for v in BASE], torch=[4.0] * 5), row("s", "new", 1, forgegrad=BASE),
           row("s", "no fg", 1, forgegrad=None, torch=[1.0])]
    by_time = {e["workload"]: e for e in _compare.compare_results(old, new, by="time")}
    assert by_time["w1"]["verdict"] == "regression" and by_time["w1"]["reference_change"] == pytest.approx(1.0)
    assert by_time["gone"]["verdict"] == "only in old" and by_time["new"]["verdict"] == "only in new"
    assert by_time["no fg"]["verdict"] == "not measured"
    text = _compare.format_table(list(by_time.values()), by="time")
    assert "REGRESSION" in text and "+100.0% (torch)" in text
    by_torch = {e["workload"]: e for e in _compare.compare_results(old, new, by="torch")}
    assert by_torch["w1"]["verdict"] == "within noise"  # forgegrad / torch did not change
    auto = {e["workload"]: e for e in _compare.compare_results(old, new)}
    assert auto["w1"]["verdict"] == "drift" and auto["w1"]["relative_change"] == pytest.approx(0.0)
    assert auto["gone"]["verdict"] == "only in old"


def test_auto_flags_only_what_slows_against_every_reference():
    ref = [1.0, 1.01, 0.99]
    old = [row("s", "kernel", 1, forgegrad=BASE, numpy=ref, torch=ref),
           row("s", "shared", 1, forgegrad=BASE, numpy=ref, torch=ref),
           row("s", "per-param", 1, forgegrad=BASE, forgegrad_per_param=ref, torch=ref)]
    new = [row("s", "kernel", 1, forgegrad=[3 * v for v in BASE], numpy=ref, torch=ref),
           # forgegrad and torch (similar kernels) slowed alike, numpy did not: the machine, not the code
           row("s", "shared", 1, forgegrad=[1.5 * v for v in BASE], numpy=ref, torch=[1.5 * v for v in ref]),
           # a forgegrad variant is no reference: torch decides
           row("s", "per-param", 1, forgegrad=[2 * v for v in BASE], forgegrad_per_param=[2 * v for v in ref],
               torch=ref)]
    got = {e["workload"]: e for e in _compare.compare_results(old, new)}
    assert got["kernel"]["verdict"] == "regression" and got["kernel"]["change"] == pytest.approx(2.0)
    assert got["shared"]["verdict"] == "drift" and got["shared"]["reference"] == "torch"
    assert got["per-param"]["verdict"] == "regression" and got["per-param"]["reference"] == "torch"
    better = [row("s", "kernel", 1, forgegrad=[0.5 * v for v in BASE], numpy=ref, torch=ref)]
    assert _compare.compare_results(old[:1], better)[0]["verdict"] == "improvement"


def _write_results(path, rows):
    path.write_text(json.dumps({"schema": 2, "kind": "bench", "fingerprint": FINGERPRINT, "results": rows}))
    return str(path)


def test_compare_command_exit_codes_and_report(capsys, tmp_path):
    old = _write_results(tmp_path / "old.json", synthetic_rows())
    same = _write_results(tmp_path / "same.json", synthetic_rows())
    slow_rows = synthetic_rows()
    slow_rows[0]["samples"]["forgegrad"] = [3 * v for v in slow_rows[0]["samples"]["forgegrad"]]
    slow = _write_results(tmp_path / "slow.json", slow_rows)

    assert main(["bench", "compare", old, same]) == 0
    out = capsys.readouterr().out
    assert "within noise" in out and "REGRESSION" not in out
    assert main(["bench", "compare", old, slow, "--report", str(tmp_path / "rep")]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION: alpha / square 256 / 1 thr: +200.0%" in out
    assert (tmp_path / "rep" / "compare.png").read_bytes().startswith(PNG)
    md = (tmp_path / "rep" / "compare.md").read_text()
    assert "| alpha | square 256 | 1 |" in md and "REGRESSION" in md and "Test CPU" in md
    assert main(["bench", "compare", old, slow, "--no-fail"]) == 0
    assert main(["bench", "compare", old, slow, "--threshold", "5"]) == 0  # a 200 % change under a 500 % bar
    capsys.readouterr()


def test_compare_command_usage_errors(capsys, tmp_path):
    good = _write_results(tmp_path / "good.json", synthetic_rows())
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text(json.dumps({"results": [{"x": 1}]}))
    for argv, needle in ((["bench", "compare", good], "two results.json"),
                         (["bench", "compare", good, str(tmp_path / "bad.json")], "bad.json is not JSON"),
                         (["bench", "compare", good, str(tmp_path / "none.json")], "cannot read"),
                         (["bench", "compare", good, str(tmp_path / "list.json")], "results[0] is not a benchmark row"),
                         (["bench", "compare", good, good, "--by", "nosuch"], "--by nosuch"),
                         (["bench", "compare", good, good, "--noise", "-1"], "--noise"),
                         (["bench", "train", good], "only `bench compare` takes files")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("forgegrad: error: ") and needle in err[0], (argv, err)
