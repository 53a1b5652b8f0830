"""`forgegrad ops`: the registry table lists every op with its devices and generated checks."""
import json

import forgegrad as fg
from forgegrad.cli import main


def test_ops_json_lists_every_registered_op(capsys):
    assert main(["ops", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["op"] for r in rows] == [op.name for op in fg.ops.all_ops()]
    by_name = {r["op"]: r for r in rows}
    assert by_name["linear"]["inference_kernel"] == ["cpu"]
    assert by_name["layer_norm"]["devices"] == ["cpu", "cuda", "meta"]
    assert by_name["dropout"]["checks"]["onnx"].startswith("gap: ")
    assert all(v == "yes" or v.startswith("gap: ") for r in rows for v in r["checks"].values()), \
        "an op lacks samples or a torch reference without an explained gap"


def test_ops_table_names_gaps_with_reasons(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    assert "relu" in out and "gaps and missing checks:" in out
    assert "dropout/onnx: gap: exported only in eval mode" in out
