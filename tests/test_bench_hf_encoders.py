"""`forgegrad bench hf-encoders` at its --quick shapes (2-layer, 64-wide Whisper, DeBERTa-v3 and MPNet): every row
timed on forgegrad, transformers and onnxruntime, with the check of the outputs in its note. No timing assertions."""
import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")


def test_hf_encoders_suite_quick_times_every_runtime_and_checks_outputs(capsys):
    from forgegrad.bench import format_table, run, suites
    assert "hf-encoders" in suites()
    rows = run("hf-encoders", (1,), quick=True)
    names = [r["workload"] for r in rows]
    assert names == ["whisper-tiny (2 layers, 64 wide) encoder, one 30 s window",
                     "whisper-tiny (2 layers, 64 wide) encoder + 32 tokens (greedy)"] + [
        f"{model} (2 layers, 64 wide) forward {b} x 32 ({kind})" for model in ("deberta-v3-small", "all-mpnet-base-v2")
        for b in (1, 2) for kind in ("nn.utils.freeze copy", "plain model")]
    for r in rows:
        assert r["threads"] == 1 and set(r["seconds"]) == {"forgegrad", "transformers", "onnxruntime"}
        assert all(s > 0 for s in r["seconds"].values()), r
        assert all(len(v) == 2 for v in r["samples"].values())  # two interleaved rounds under --quick
    # the same greedy tokens on the three sides, the same hidden states (checked before timing, said in the notes)
    assert rows[1]["note"] == "32 new tokens; transformers the same, onnxruntime the same"
    for r in rows[2::2]:
        assert r["note"].startswith("largest difference from transformers' last_hidden_state: forgegrad ")
        assert "MISMATCH" not in r["note"] and "onnxruntime" in r["note"]
    # the two DeBERTa rows of a batch share transformers' and onnxruntime's samples (timed in the same rounds)
    assert rows[2]["samples"]["transformers"] == rows[3]["samples"]["transformers"]
    assert "x onnxruntime" in format_table(rows).splitlines()[0]


def test_token_check_names_the_runtime_and_first_token_that_differ():
    from forgegrad.bench.hf_encoders import _token_check
    ours = np.array([[5, 6, 7, 8]])
    note = _token_check(ours, {"transformers": np.array([[5, 6, 9, 8]]), "onnxruntime": ours.copy(), "x": None})
    assert note == "4 new tokens; MISMATCH: transformers differs from token 2, onnxruntime the same"
    assert _token_check(ours, {"transformers": ours[:, :3]}) == \
        "4 new tokens; MISMATCH: transformers differs 3 tokens against 4"
