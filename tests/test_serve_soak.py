"""Soak: `forgegrad serve` in its own process under 64 concurrent clients (loopback, bounded in time)
ends with no 5xx but the documented 503s, every answer correct, and RSS within 10 % of its level
after warm-up."""
from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("starlette", reason="forgegrad[serve] is not installed")
httpx = pytest.importorskip("httpx")

from serve_helpers import assert_same, direct, example, start_cli_server, write_checkpoint  # noqa: E402

SOAK_S = 30.0
CLIENTS = 64


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="RSS is read from /proc (Linux)")
def test_soak_64_clients_no_5xx_and_bounded_rss(tmp_path):
    from forgegrad.serve.loadgen import run_load
    mlp = write_checkpoint("mlp", str(tmp_path / "models" / "mlp" / "1"))
    proc, url = start_cli_server(tmp_path / "models", "--threads", "1", "--log-level", "warning", output="stderr")
    try:
        x = example("mlp", 2)
        body = json.dumps({"instances": x.tolist()}).encode()
        headers = {"Content-Type": "application/json"}
        predict = url + "/v1/models/mlp:predict"
        warm = run_load(predict, body, headers, concurrency=CLIENTS, duration_s=2.0)
        before = rss_kib(proc.pid)
        soak = run_load(predict, body, headers, concurrency=CLIENTS, duration_s=SOAK_S)
        after = rss_kib(proc.pid)
        for result in (warm, soak):
            unexpected = {c: n for c, n in result.codes.items() if c >= 500 and c != 503}
            assert not unexpected, f"5xx answers: {unexpected}"
            assert not result.errors, f"transport errors: {result.errors}"
            assert result.codes.get(200, 0) > 0
        assert after <= 1.10 * before, f"RSS grew from {before} KiB to {after} KiB over the soak"
        r = httpx.post(predict, content=body, headers=headers, timeout=30)
        assert_same(r.json()["predictions"], direct(mlp, x), "after the soak")
        text = httpx.get(url + "/metrics", timeout=30).text
        assert "forgegrad_batch_size_count" in text
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stderr.close()
