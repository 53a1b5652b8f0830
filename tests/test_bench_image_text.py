"""`forgegrad bench image-text` at its --quick shapes: the LLaVA, Gemma 3 with images and Qwen3-MoE rows timed on
forgegrad, transformers and onnxruntime (the image-text models' three graphs, the routed MoE export), each note saying
how close the logits are. No timing assertions."""
import re

import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")


def test_image_text_suite_quick_times_every_runtime_and_checks_logits():
    from forgegrad.bench import run, suites
    assert "image-text" in suites()
    rows = run("image-text", (1,), quick=True)
    assert [r["workload"].split(" (")[0] for r in rows] == ["LLaVA 1.5 shape", "Gemma 3 with images", "Qwen3-MoE"]
    assert [set(r["seconds"]) for r in rows] == [{"forgegrad", "transformers", "onnxruntime"}] * 3
    for r in rows:
        assert all(s > 0 for s in r["seconds"].values()), r
        diffs = [float(v) for v in re.findall(r": (\d\.\de[-+]\d\d)", r["note"])]
        assert diffs and all(d < 1e-4 for d in diffs), r["note"]
    assert all("onnxruntime's from forgegrad's" in r["note"] for r in rows)
