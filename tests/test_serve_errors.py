"""forgegrad serve under bad input: every malformed request gets a 4xx JSON error naming the problem,
and the next good request still succeeds; a full queue answers 503 with Retry-After; the command
line refuses bad arguments."""
from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette", reason="forgegrad[serve] is not installed")
httpx = pytest.importorskip("httpx")

from serve_helpers import (assert_same, direct, example, free_port, running_server, start_cli_server,  # noqa: E402
                           write_checkpoint)

NPY = {"Content-Type": "application/x-npy"}
LIMIT = 64 * 1024


def npy(a, **kw):
    buf = io.BytesIO()
    np.save(buf, a, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    mlp = write_checkpoint("mlp", str(root / "mlp" / "1"))
    write_checkpoint("char_lstm", str(root / "char_lstm" / "1"))
    with running_server(str(root), max_body_bytes=LIMIT, poll_s=0) as (url, _):
        yield url, mlp


def _big_chunks():
    for _ in range(20):
        yield b"[" + b"0.5," * 2000


ROW = [0.5] * 64
J = {"Content-Type": "application/json"}
# (what, method, path, body, headers, status, words the error must contain)
CASES = [
    ("wrong shape", "POST", "/v1/models/mlp:predict", {"instances": [[1.0, 2.0]]}, None, 400, "shape"),
    ("wrong rank", "POST", "/v1/models/mlp:predict", {"inputs": ROW}, None, 400, "shape"),
    ("strings", "POST", "/v1/models/mlp:predict", {"instances": [["a"] * 64]}, None, 400, "strings"),
    ("numeric strings", "POST", "/v1/models/mlp:predict", {"instances": [["1.5"] * 64]}, None, 400, "strings"),
    ("booleans", "POST", "/v1/models/mlp:predict", {"instances": [[True] * 64]}, None, 400, "booleans"),
    ("null", "POST", "/v1/models/mlp:predict", {"instances": [[None] * 64]}, None, 400, "numbers"),
    ("ragged", "POST", "/v1/models/mlp:predict", {"instances": [ROW, ROW[:10]]}, None, 400, "rectangular"),
    ("NaN", "POST", "/v1/models/mlp:predict", b'{"instances": [[NaN' + b", 0.5" * 63 + b"]]}", J, 400, "NaN"),
    ("Infinity", "POST", "/v1/models/mlp:predict", b'{"inputs": [[Infinity' + b", 0.5" * 63 + b"]]}", J, 400,
     "infinity"),
    ("float overflow", "POST", "/v1/models/mlp:predict", {"instances": [[1e300] * 64]}, None, 400, "overflow"),
    ("not JSON", "POST", "/v1/models/mlp:predict", b"{instances: oops", J, 400, "not valid JSON"),
    ("not UTF-8", "POST", "/v1/models/mlp:predict", b"\xff\xfe\x00", J, 400, "not valid JSON"),
    ("empty body", "POST", "/v1/models/mlp:predict", b"", J, 400, "empty"),
    ("deep nesting", "POST", "/v1/models/mlp:predict", b"[" * 100000 + b"]" * 100000, J, 413, "limit"),
    ("JSON list", "POST", "/v1/models/mlp:predict", [ROW], None, 400, "instances"),
    ("both keys", "POST", "/v1/models/mlp:predict", {"instances": [ROW], "inputs": [ROW]}, None, 400, "exactly one"),
    ("unknown key", "POST", "/v1/models/mlp:predict", {"instance": [ROW]}, None, 400, "unknown request keys"),
    ("empty instances", "POST", "/v1/models/mlp:predict", {"instances": []}, None, 400, "non-empty"),
    ("wrong input name", "POST", "/v1/models/mlp:predict", {"inputs": {"nope": [ROW]}}, None, 400, "nope"),
    ("unknown model", "POST", "/v1/models/nosuch:predict", {"instances": [ROW]}, None, 404, "unknown model"),
    ("unknown version", "POST", "/v1/models/mlp/versions/9:predict", {"instances": [ROW]}, None, 404, "version 9"),
    ("bad version", "POST", "/v1/models/mlp/versions/x:predict", {"instances": [ROW]}, None, 400, "version"),
    ("unknown verb", "POST", "/v1/models/mlp:classify", {"instances": [ROW]}, None, 400, "classify"),
    ("status of unknown", "GET", "/v1/models/nosuch", None, None, 404, "unknown model"),
    ("TorchServe unknown", "POST", "/predictions/nosuch", [ROW], None, 404, "unknown model"),
    ("TorchServe shape", "POST", "/predictions/mlp", [[ROW]], None, 400, "shape"),
    ("body over limit", "POST", "/predictions/mlp", b"[" + b"0.5," * (LIMIT // 4) + b"0.5]", J, 413, "limit"),
    ("chunked body over limit", "POST", "/predictions/mlp", "chunks", J, 413, "limit"),
    ("garbage .npy", "POST", "/predictions/mlp", b"\x93NUMPY garbage", NPY, 400, ".npy"),
    ("truncated .npy", "POST", "/predictions/mlp", npy(np.ones((2, 64), np.float32))[:-20], NPY, 400, ".npy"),
    ("pickled .npy", "POST", "/predictions/mlp", npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), NPY,
     400, ".npy"),
    ("string .npy", "POST", "/predictions/mlp", npy(np.array([["x"] * 64])), NPY, 400, "not numeric"),
    (".npy shape", "POST", "/v1/models/mlp:predict", npy(np.ones((2, 3), np.float32)), NPY, 400, "shape"),
    (".npy NaN", "POST", "/predictions/mlp", npy(np.full(64, np.nan, np.float32)), NPY, 400, "NaN"),
    (".npz", "POST", "/predictions/mlp", "npz", NPY, 400, "npz"),
    ("token out of range", "POST", "/predictions/char_lstm", [0, 1, 2, 3, 4, 12], None, 400, "[0, 12)"),
    ("negative token", "POST", "/predictions/char_lstm", [0, 1, 2, 3, 4, -1], None, 400, "[0, 12)"),
    ("fractional token", "POST", "/predictions/char_lstm", [0, 1, 2, 3, 4, 1.5], None, 400, "integers"),
    ("unknown route", "GET", "/nosuch", None, None, 404, "no such route"),
    ("wrong method", "GET", "/predictions/mlp", None, None, 405, "GET"),
]


def _send(c, method, path, body, headers):
    if body == "chunks":
        return c.request(method, path, content=_big_chunks(), headers=headers)
    if body == "npz":
        buf = io.BytesIO()
        np.savez(buf, a=np.ones(64, np.float32))
        return c.request(method, path, content=buf.getvalue(), headers=headers)
    if isinstance(body, (bytes, type(None))):
        return c.request(method, path, content=body, headers=headers)
    return c.request(method, path, content=json.dumps(body).encode(), headers=headers or J)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_its_4xx_and_the_next_request_succeeds(served, case):
    url, mlp = served
    what, method, path, body, headers, status, words = case
    x = example("mlp", 2)
    with httpx.Client(base_url=url, timeout=30) as c:
        r = _send(c, method, path, body, headers)
        assert r.status_code == status, f"{what}: {r.status_code} {r.text[:300]}"
        assert r.headers["content-type"].startswith("application/json")
        err = r.json()["error"]
        assert words.lower() in err.lower(), f"{what}: error {err!r} does not mention {words!r}"
        good = c.post("/v1/models/mlp:predict", json={"instances": x.tolist()})
        assert good.status_code == 200
        assert_same(good.json()["predictions"], direct(mlp, x), f"after {what}")


def test_a_bad_request_batched_with_good_ones_does_not_hurt_them(served):
    """Concurrent good and bad requests: the bad ones get 400, the good ones their results."""
    url, mlp = served
    xs = [example("mlp", 1, seed=i) for i in range(12)]

    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            good = [c.post("/v1/models/mlp:predict", json={"instances": x.tolist()}) for x in xs]
            bad = [c.post("/v1/models/mlp:predict", json={"instances": [[1.0]]}) for _ in range(4)]
            return await asyncio.gather(*good, *bad)

    responses = asyncio.run(go())
    for x, r in zip(xs, responses[:12]):
        assert r.status_code == 200
        assert_same(r.json()["predictions"], direct(mlp, x), "good request among bad ones")
    assert all(r.status_code == 400 for r in responses[12:])


class _BlockingModel:
    """A model whose calls wait until released: holds the worker so the queue fills up."""
    backend, fixed_batch, outputs = "test", None, ["output"]

    def __init__(self):
        self.release = threading.Event()
        self.calls = []

    def run(self, feeds):
        self.calls.append(len(feeds["x"]))
        self.release.wait(30)
        return {"output": feeds["x"] * 2}

    def close(self):
        pass


def test_full_queue_answers_503_with_retry_after():
    from forgegrad.serve import ServeError
    from forgegrad.serve.batching import Batcher

    async def go():
        model = _BlockingModel()
        b = Batcher(model, "blocking/1", max_batch=4, max_delay_s=0.0, max_queue=2)
        b.start()
        first = asyncio.ensure_future(b.submit({"x": np.ones((1, 2))}))
        for _ in range(200):  # the first request reaches the (blocked) model
            await asyncio.sleep(0.01)
            if model.calls:
                break
        queued = [asyncio.ensure_future(b.submit({"x": np.full((1, 2), i)})) for i in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(ServeError) as e:
            await b.submit({"x": np.ones((1, 2))})
        assert e.value.status == 503 and e.value.headers.get("Retry-After") == "1"
        model.release.set()
        out = await asyncio.gather(first, *queued)
        await b.close()
        return model.calls, out

    calls, out = asyncio.run(go())
    assert calls == [1, 2]  # the two queued requests ran as one batch once the worker was free
    np.testing.assert_array_equal(out[2]["output"], np.full((1, 2), 2.0))


def _cli(*args, timeout=60):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "forgegrad.cli", "serve", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_refuses_bad_arguments(tmp_path):
    r = _cli(str(tmp_path / "nosuch"))
    assert r.returncode == 2 and "not found" in r.stderr
    r = _cli(str(tmp_path), "--max-batch", "0")
    assert r.returncode == 2 and "--max-batch" in r.stderr
    r = _cli(str(tmp_path), "--max-delay-ms", "nan")
    assert r.returncode == 2
    (tmp_path / "x.txt").write_text("hi")
    r = _cli(str(tmp_path / "x.txt"))
    assert r.returncode == 2 and ".onnx" in r.stderr
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    r = _cli(str(bad), "--port", str(free_port()), "--log-level", "critical")
    assert r.returncode == 1 and "onnxruntime cannot load" in r.stderr and "bad.onnx" in r.stderr


def test_cli_serves_a_checkpoint_on_loopback(tmp_path):
    mlp = write_checkpoint("mlp", str(tmp_path / "ckpt"))
    proc, url = start_cli_server(tmp_path / "ckpt", "--log-level", "warning")
    try:
        x = example("mlp", 3)
        r = httpx.post(url + "/v1/models/ckpt:predict", json={"instances": x.tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        assert_same(r.json()["predictions"], direct(mlp, x), "forgegrad serve CHECKPOINT")
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()


def test_broken_versions_are_reported_and_the_good_one_served(tmp_path):
    """A corrupt version, or a model.json naming something that is not a zoo model (nothing named in a
    file is ever imported), is reported in the status; the good version keeps serving."""
    root = tmp_path / "mlp"
    mlp = write_checkpoint("mlp", str(root / "1"))
    write_checkpoint("mlp", str(root / "2"))
    meta_path = root / "2" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(dict(meta, name="subprocess", kwargs={"args": ["true"]})))
    (root / "3").mkdir()
    (root / "3" / "model.onnx").write_bytes(b"\x08\x07garbage")
    (root / "4").mkdir()  # empty: nothing to serve
    x = example("mlp", 2)
    with running_server(str(root), poll_s=0) as (url, _), httpx.Client(base_url=url, timeout=30) as c:
        status = {s["version"]: s for s in c.get("/v1/models/mlp").json()["model_version_status"]}
        assert status["1"]["state"] == "AVAILABLE"
        for v, words in (("2", "subprocess"), ("3", "onnxruntime cannot load"), ("4", "no .onnx file")):
            assert status[v]["state"] == "END" and words in status[v]["status"]["error_message"], status[v]
        r = c.post("/v1/models/mlp:predict", json={"instances": x.tolist()})
        assert r.status_code == 200
        assert_same(r.json()["predictions"], direct(mlp, x), "the good version")
        assert c.post("/v1/models/mlp/versions/2:predict", json={"instances": x.tolist()}).status_code == 404


def test_client_hanging_up_mid_body_is_not_a_server_error(served):
    import socket
    url, mlp = served
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/models/mlp:predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 60000\r\n\r\n" + b"[1," * 100)
        time.sleep(0.2)
    x = example("mlp", 1)
    for _ in range(100):  # bounded: the server notices the hang-up on its own schedule
        text = httpx.get(url + "/metrics", timeout=30).text
        if 'code="499"' in text:
            break
        time.sleep(0.05)
    assert 'code="499"' in text and 'code="500"' not in text
    r = httpx.post(url + "/v1/models/mlp:predict", json={"instances": x.tolist()}, timeout=30)
    assert_same(r.json()["predictions"], direct(mlp, x), "after a client hung up")
