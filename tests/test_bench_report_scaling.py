"""`forgegrad bench scaling`: crossing points and growth exponents on synthetic curves, the scaling
report writer (curves, memory table and charts), the fresh-process memory probe, and one tiny real
sweep through the command. No timing assertions."""
import json
import math

import pytest

from forgegrad.bench import _scaling as S
from forgegrad.cli import _scaling_report, main

PNG = b"\x89PNG\r\n\x1a\n"


def sweep_rows(name, xs, fg, ref, reference="torch", threads_axis=False):
    """Rows of a sweep with 3 rounds per point (forgegrad / reference seconds at each x)."""
    out = []
    for x, a, b in zip(xs, fg, ref):
        out.append({"suite": f"scaling: {name}", "workload": f"{name} batch size={x}", "threads": 1,
                    "seconds": {"forgegrad": a, reference: b},
                    "samples": {"forgegrad": [a * 0.95, a, a * 1.05], reference: [b * 0.9, b, b * 1.1]},
                    "sweep": name, "x": x, "work": float(x), "work_unit": "samples", "title": f"{name} step",
                    "xlabel": "threads" if threads_axis else "batch size", "threads_axis": threads_axis})
    return out


def test_crossings_are_interpolated_on_log_axes():
    # forgegrad 2x faster at 1, 2x slower at 16: log speed-up crosses zero halfway (geometrically): x = 4
    rows = sweep_rows("m", [1, 16], [1.0, 2.0], [2.0, 1.0])
    (c,) = S.crossings(rows, "torch")
    assert c["x"] == pytest.approx(4.0) and c["direction"] == "reference ahead" and c["between"] == (1, 16)
    back = S.crossings(sweep_rows("m", [1, 16, 256], [1.0, 2.0, 1.0], [2.0, 1.0, 2.0]), "torch")
    assert [b["direction"] for b in back] == ["reference ahead", "forgegrad ahead"]
    assert S.crossings(sweep_rows("m", [1, 2, 4], [1, 1, 1], [2, 3, 4]), "torch") == []
    assert S.crossings(rows, "numpy") == []  # not measured
    # a tie (within 3 % of 1.0x, or rounds straddling it) takes no side: no crossing on each side of it
    level = sweep_rows("m", [1, 16, 256], [1.0, 1.0, 1.0], [2.0, 1.01, 2.0])
    assert S.crossings(level, "torch") == [] and S.ties(level, "torch") == [16]
    across = sweep_rows("m", [1, 16, 256], [1.0, 1.0, 2.0], [2.0, 1.01, 1.0])
    (c,) = S.crossings(across, "torch")
    assert c["between"] == (1, 256) and c["x"] == pytest.approx(16.0)


def test_growth_slope():
    xs = [1, 2, 4, 8, 16, 32]
    assert S.growth_slope(xs, [10.0] * 6) == pytest.approx(0.0, abs=1e-12)
    # a fixed cost does not change the per-sample slope over the larger batches
    assert S.growth_slope(xs, [1000 + 3.0 * x for x in xs]) == pytest.approx(3.0)
    assert S.growth_slope([4, 8], [1.0, 3.0]) == pytest.approx(0.5)
    assert S.growth_slope([1], [1.0]) is None


def test_scaling_report_writes_curves_crossings_and_memory(tmp_path):
    rows = sweep_rows("lenet", [1, 16, 256], [1e-3, 8e-3, 200e-3], [2e-3, 16e-3, 100e-3])
    rows += sweep_rows("threads_x", [1, 2], [1e-2, 0.6e-2], [1e-2, 0.8e-2], threads_axis=True)
    memory = [{"model": "lenet", "runtime": rt, "batch": b, "peak_kib": base + k * b, "base_kib": base,
               "step_kib": k * b, "peak_reset": True}
              for rt, base, k in (("forgegrad", 40_000, 600), ("torch", 300_000, 700)) for b in (1, 16, 256)]
    fp = {"cpu": {"model": "Test CPU"}, "versions": {"forgegrad": "0.1.0"}}
    written = _scaling_report.write(rows, memory, str(tmp_path), fp, threads=1)
    names = sorted(p.rsplit("/", 1)[-1] for p in written)
    assert names == ["memory_lenet.png", "report.md", "results.json", "scaling_lenet.png", "scaling_threads_x.png"]
    for n in names:
        if n.endswith(".png"):
            assert (tmp_path / n).read_bytes().startswith(PNG)
    md = (tmp_path / "report.md").read_text()
    # log speed-up 0.693 at 16 and -0.693 at 256: crossing at sqrt(16 * 256) = 64
    assert "forgegrad falls behind torch at batch size ≈ 64 (between 16 and 256)" in md
    assert "speed-up at 1 thread 1.00x, 2 threads 1.33x" in md  # thread sweeps list their points
    assert "| lenet | 256 | 189.1 MiB | 150.0 MiB | 468.0 MiB | 175.0 MiB | 0.86 |" in md
    assert ("lenet: step memory per extra sample over the larger batches: forgegrad 600 KiB, torch 700 KiB "
            "(0.86x torch's: forgegrad's memory grows no faster than torch's)") in md
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["kind"] == "scaling" and data["memory"] == memory and data["results"] == rows


def test_memory_probe_runs_in_a_fresh_process():
    m = S.measure_memory("mlp", "forgegrad", 4)
    assert m["model"] == "mlp" and m["runtime"] == "forgegrad" and m["batch"] == 4
    assert m["peak_kib"] >= m["base_kib"] > 0
    assert m["step_kib"] is None or m["step_kib"] >= 0
    with pytest.raises(ValueError, match="runtime must be"):
        S.memory_probe("mlp", "jax", 1)
    with pytest.raises(ValueError, match="unknown scaling model"):
        S._fg_model("gpt9")


def test_scaling_command_one_small_sweep(capsys, tmp_path, monkeypatch):
    # the smallest sizes of the registered sgemm sweep, through the command
    monkeypatch.setitem(S._SWEEPS, "sgemm", S.Sweep(**{**S.sweeps()["sgemm"].__dict__, "quick_points": (16, 64),
                                                       "repeat": 2, "min_time": 0.0}))
    code = main(["bench", "scaling", "--quick", "--only", "sgemm", "--report", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "sgemm N=16" in out and "sgemm N=64" in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["x"] for r in data["results"]] == [16, 64]
    assert all(r["work"] == pytest.approx(2 * r["x"] ** 3 / 1e9) for r in data["results"])
    assert all(math.isfinite(r["seconds"]["forgegrad"]) for r in data["results"])
    assert (tmp_path / "scaling_sgemm.png").read_bytes().startswith(PNG)
    assert main(["bench", "scaling", "--only", "nosuch"]) == 2
    assert "unknown sweep 'nosuch'" in capsys.readouterr().err
    assert main(["bench", "scaling", "--threads", "1", "2"]) == 2
    capsys.readouterr()
