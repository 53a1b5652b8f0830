"""forgegrad serve end to end: the real server (uvicorn) on a loopback port, a real HTTP client
(httpx). Every route and body format returns the model's direct output; concurrent requests are
batched without changing results; new version directories are picked up while it runs."""
from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("starlette", reason="forgegrad[serve] is not installed")
httpx = pytest.importorskip("httpx")

from serve_helpers import (assert_same, direct, example, metric, onnx_direct, running_server,  # noqa: E402
                           write_checkpoint, write_onnx)

NPY = {"Content-Type": "application/x-npy"}


def npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    models = {}
    for name in ("mlp", "lenet8", "char_lstm", "vae"):
        models[name] = write_checkpoint(name, str(root / name / "1"), seed=0)
    models["mlp_v2"] = write_checkpoint("mlp", str(root / "mlp" / "2"), seed=7)
    onnx_path = write_onnx(str(root / "onnx_mlp" / "1"), seed=3)
    return root, models, onnx_path


@pytest.fixture(scope="module")
def server(repo):
    with running_server(str(repo[0]), max_batch=16, max_delay_ms=2, poll_s=0) as (url, app):
        yield url


def expected_for(repo, name, x):
    _, models, onnx_path = repo
    if name == "onnx_mlp":
        return onnx_direct(onnx_path, x)
    return direct(models["mlp_v2" if name == "mlp" else name], x)  # mlp serves its newest version


@pytest.mark.parametrize("name", ["mlp", "lenet8", "char_lstm", "vae", "onnx_mlp"])
def test_every_route_and_format_returns_the_direct_output(server, repo, name):
    sample = "mlp" if name == "onnx_mlp" else name
    x = example(sample, 3)
    want = expected_for(repo, name, x)
    with httpx.Client(base_url=server, timeout=30) as c:
        r = c.post(f"/v1/models/{name}:predict", json={"instances": x.tolist()})
        assert r.status_code == 200, r.text
        assert_same(r.json()["predictions"], want, "TF row format")
        r = c.post(f"/v1/models/{name}:predict", json={"inputs": x.tolist()})
        assert_same(r.json()["outputs"], want, "TF columnar format")
        input_name = c.get(f"/v1/models/{name}/metadata").json()["metadata"]["inputs"][0]["name"]
        r = c.post(f"/v1/models/{name}:predict", json={"instances": [{input_name: row.tolist()} for row in x]})
        assert_same(r.json()["predictions"], want, "TF row format, named inputs")
        r = c.post(f"/v1/models/{name}:predict", json={"inputs": {input_name: x.tolist()}})
        assert_same(r.json()["outputs"], want, "TF columnar format, named inputs")
        r = c.post(f"/v1/models/{name}:predict", content=npy(x), headers=NPY)
        assert_same(r.json()["outputs"], want, "TF route, .npy body")
        r = c.post(f"/v1/models/{name}/versions/1:predict", content=npy(x),
                   headers={**NPY, "Accept": "application/x-npy"})
        assert r.headers["content-type"].startswith("application/x-npy")
        got = np.load(io.BytesIO(r.content), allow_pickle=False)
        if name != "mlp":  # mlp/1 is the older version
            assert_same(got, want, "TF route, .npy in and out")
        r = c.post(f"/predictions/{name}", json=x.tolist())
        assert_same(r.json(), want, "TorchServe, JSON batch")
        r = c.post(f"/predictions/{name}", json=x[1].tolist())
        assert_same(r.json(), want[1], "TorchServe, one JSON instance")
        r = c.post(f"/predictions/{name}", json={"data": x[2].tolist()})
        assert_same(r.json(), want[2], 'TorchServe, {"data": instance}')
        r = c.post(f"/predictions/{name}", content=npy(x[0]), headers=NPY)
        assert_same(r.json(), want[0], "TorchServe, one .npy instance")
        r = c.post(f"/predictions/{name}", content=npy(x), headers={**NPY, "Accept": "application/x-npy"})
        assert_same(np.load(io.BytesIO(r.content), allow_pickle=False), want, "TorchServe, .npy in and out")


def test_versions_pinned_status_ping_and_listing(server, repo):
    _, models, _ = repo
    x = example("mlp", 2)
    with httpx.Client(base_url=server, timeout=30) as c:
        v1 = c.post("/v1/models/mlp/versions/1:predict", json={"instances": x.tolist()}).json()["predictions"]
        v2 = c.post("/v1/models/mlp/versions/2:predict", json={"instances": x.tolist()}).json()["predictions"]
        assert_same(v1, direct(models["mlp"], x), "version 1")
        assert_same(v2, direct(models["mlp_v2"], x), "version 2")
        assert_same(c.post("/predictions/mlp/1", json=x.tolist()).json(), direct(models["mlp"], x), "TorchServe v1")
        status = c.get("/v1/models/mlp").json()["model_version_status"]
        assert [s["version"] for s in status] == ["2", "1"]
        assert all(s["state"] == "AVAILABLE" for s in status)
        assert c.get("/v1/models/mlp/versions/1").json()["model_version_status"][0]["version"] == "1"
        meta = c.get("/v1/models/char_lstm/metadata").json()["metadata"]
        assert meta["inputs"][0]["dtype"] == "int64" and meta["inputs"][0]["shape"] == [-1, 6]
        assert meta["backend"] == "forgegrad"
        onnx_meta = c.get("/v1/models/onnx_mlp/metadata").json()["metadata"]
        assert onnx_meta["backend"] == "onnxruntime"
        # a checkpoint and its ONNX export take the same request keys
        mlp_meta = c.get("/v1/models/mlp/metadata").json()["metadata"]
        assert mlp_meta["inputs"][0]["name"] == onnx_meta["inputs"][0]["name"]
        assert c.get("/ping").json() == {"status": "Healthy"}
        names = [m["modelName"] for m in c.get("/models").json()["models"]]
        assert names == ["char_lstm", "lenet8", "mlp", "onnx_mlp", "vae"]


def test_concurrent_requests_are_batched_without_changing_results(repo):
    root, models, onnx_path = repo
    xs = [example("mlp", 1 + i % 3, seed=100 + i) for i in range(24)]

    async def fire(url, name):
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            return await asyncio.gather(*(c.post(f"/v1/models/{name}:predict", json={"instances": x.tolist()})
                                          for x in xs))

    # a long delay so that the concurrent requests surely meet in the queue
    with running_server(str(root), max_batch=64, max_delay_ms=300, poll_s=0) as (url, _):
        for name, ref in (("mlp", lambda x: direct(models["mlp_v2"], x)),
                          ("onnx_mlp", lambda x: onnx_direct(onnx_path, x))):
            responses = asyncio.run(fire(url, name))
            for x, r in zip(xs, responses):
                assert r.status_code == 200, r.text
                assert_same(r.json()["predictions"], ref(x), f"{name}: batched request")
            text = httpx.get(url + "/metrics").text
            rows = metric(text, "forgegrad_batch_size_sum", model=name)
            batches = metric(text, "forgegrad_batch_size_count", model=name)
            assert rows == sum(len(x) for x in xs)
            assert batches < len(xs), f"{name}: {len(xs)} concurrent requests ran as {batches} batches"
            assert metric(text, "forgegrad_requests_total", model=name, code="200") == len(xs)
            assert metric(text, "forgegrad_request_latency_seconds_count", model=name) == len(xs)
            assert "forgegrad_queue_depth" in text


def test_new_version_directory_is_picked_up_and_removed_one_dropped(tmp_path):
    root = tmp_path / "mlp"
    v1 = write_checkpoint("mlp", str(root / "1"), seed=0)
    x = example("mlp", 2)
    with running_server(str(root), poll_s=0.05) as (url, _), httpx.Client(base_url=url, timeout=30) as c:
        assert_same(c.post("/v1/models/mlp:predict", json={"instances": x.tolist()}).json()["predictions"],
                    direct(v1, x), "version 1")
        # written elsewhere, then renamed in: a version appears complete or not at all
        v3 = write_checkpoint("mlp", str(tmp_path / "staging"), seed=5)
        os.rename(tmp_path / "staging", root / "3")
        for _ in range(400):  # bounded: 20 s at most
            if [s["version"] for s in c.get("/v1/models/mlp").json()["model_version_status"]] == ["3", "1"]:
                break
            asyncio.run(asyncio.sleep(0.05))
        else:
            pytest.fail("version 3 was not picked up")
        assert_same(c.post("/v1/models/mlp:predict", json={"instances": x.tolist()}).json()["predictions"],
                    direct(v3, x), "newest version")
        assert_same(c.post("/v1/models/mlp/versions/1:predict", json={"instances": x.tolist()}).json()["predictions"],
                    direct(v1, x), "pinned version 1")
        shutil.rmtree(root / "3")
        for _ in range(400):
            if c.post("/v1/models/mlp/versions/3:predict", json={"instances": x.tolist()}).status_code == 404:
                break
            asyncio.run(asyncio.sleep(0.05))
        else:
            pytest.fail("removed version 3 is still served")
        assert_same(c.post("/v1/models/mlp:predict", json={"instances": x.tolist()}).json()["predictions"],
                    direct(v1, x), "back to version 1")


def test_load_generator_clients_and_loopback_only(server, repo):
    from forgegrad.serve.loadgen import run_load
    x = example("mlp", 1)
    body = json.dumps({"instances": x.tolist()}).encode()
    for client in ("raw", "httpx"):
        r = run_load(server + "/v1/models/mlp:predict", body, {"Content-Type": "application/json"}, concurrency=4,
                     duration_s=5.0, max_requests=40, client=client)
        assert r.requests == 40 and r.codes == {200: 40} and not r.errors, (client, r.codes, r.errors)
        assert r.percentile_ms(50) <= r.percentile_ms(99)
    bad = run_load(server + "/v1/models/nosuch:predict", body, concurrency=2, duration_s=5.0, max_requests=6,
                   client="raw")
    assert bad.codes == {404: 6}
    with pytest.raises(ValueError, match="loopback"):
        run_load("http://example.com/x", body, duration_s=0.1)


def test_load_generator_measures_between_its_ramps(server, repo):
    """warmup_s / cooldown_s: the same load runs before and after the measured window; only requests sent
    inside it have latencies, every answer is in the status counts."""
    from forgegrad.serve.loadgen import run_load
    body = json.dumps({"instances": example("mlp", 1).tolist()}).encode()
    for client in ("raw", "httpx"):
        r = run_load(server + "/v1/models/mlp:predict", body, {"Content-Type": "application/json"}, concurrency=3,
                     duration_s=0.4, client=client, warmup_s=0.3, cooldown_s=0.3)
        assert not r.errors and set(r.codes) == {200}
        assert 0 < r.requests < r.codes[200], (client, r.requests, r.codes)
        assert 0.39 <= r.seconds <= 0.41 and r.throughput == r.requests / r.seconds
    with pytest.raises(ValueError, match="warmup_s and cooldown_s"):
        run_load(server + "/v1/models/mlp:predict", body, duration_s=0.1, warmup_s=-1)


def test_reference_server_matches_onnxruntime(repo):
    """The benchmark's one-request-per-call reference answers what onnxruntime computes."""
    from forgegrad.serve.reference import create_reference_app
    from serve_helpers import running_app
    _, _, onnx_path = repo
    with running_app(create_reference_app(onnx_path)) as base:
        x = example("mlp", 3)
        r = httpx.post(base + "/v1/models/m:predict", json={"instances": x.tolist()}, timeout=30)
        assert_same(r.json()["predictions"], onnx_direct(onnx_path, x), "reference server")


def test_stack_only_server_reads_bodies_and_answers_a_fixed_prediction():
    """The bench's bare-stack floor: uvicorn reading each body (any size, chunked too) and answering
    the same prediction of N numbers, no model; its command line takes a model or --stack-only."""
    from forgegrad.serve.reference import create_stack_only_app, main
    from serve_helpers import running_app
    with running_app(create_stack_only_app(3)) as base, httpx.Client(base_url=base, timeout=30) as c:
        assert c.get("/ping").json() == {"status": "Healthy"}
        for body in (b"", b"x" * 300_000, iter([b"a" * 1000, b"b" * 70_000])):
            r = c.post("/v1/models/m:predict", content=body)
            assert r.status_code == 200 and r.json() == {"predictions": [[0.0, 0.0, 0.0]]}
    for argv in ([], ["m.onnx", "--stack-only", "3"], ["--stack-only", "0"]):
        with pytest.raises(SystemExit):
            main(argv)
    with pytest.raises(ValueError, match="outputs must be >= 1"):
        create_stack_only_app(0)


def test_bench_serve_table_formats_rows():
    from forgegrad.bench import format_details, suites
    assert "serve" in suites()
    summary = {"requests": 10, "throughput": 100.0, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0}
    row = {"workload": "MLP, 32 clients", "threads": 1, "seconds": {"forgegrad": 0.01, "reference": 0.02},
           "serve": {"clients": 32, "forgegrad": summary, "reference": dict(summary, throughput=50.0),
                     "cpu_ms_per_request": {"forgegrad": 0.3, "reference": 0.4}, "mean_batch": 8.0,
                     "batch_ms": 0.5, "p99_bound_ms": 6.5}}
    text = format_details("serve", [row])
    assert "MLP, 32 clients" in text and "2.00" in text and "yes" in text
    # with the bare stack measured beside it: its p99 (4.0) plus the bound (6.5) is 10.5
    row["serve"].update(stack=dict(summary, p99_ms=4.0), p99_stack_bound_ms=10.5)
    line = format_details("serve", [row]).splitlines()[-1]
    assert line.split()[-3:] == ["4.0", "10.5", "yes"]


@pytest.mark.parametrize("auto_eager_ms, waits", [(0.0, False), (60_000.0, True)])
def test_auto_batching_is_eager_only_for_models_whose_batches_compute_long(repo, monkeypatch, auto_eager_ms, waits):
    """batching="auto" (the default) starts eager, then measures the model: with a threshold every batch
    reaches it stays eager (lone requests answered at once); with one no batch reaches it switches to
    full batches after the first, so the next lone requests wait out max-delay (0.3 s). After three
    such waits in a row that ran out short of max-batch, auto is eager for a back-off (here 2 s, then
    4 s): the request after them is answered at once; once the back-off is over, full batches are tried
    again, and one more wait that runs out starts the next back-off."""
    from forgegrad.serve import batching
    monkeypatch.setattr(batching, "FILL_BACKOFF_S", (2.0, 4.0))
    assert batching.FILL_STRIKES[0] == 3
    root, models, _ = repo
    want = lambda x: direct(models["mlp_v2"], x)  # noqa: E731
    with running_server(str(root), max_batch=64, max_delay_ms=300, poll_s=0, auto_eager_ms=auto_eager_ms) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as c:
            times = []
            for i in range(7):
                if i == 5:
                    time.sleep(2.2)  # past the first back-off
                x = example("mlp", 1, seed=i)
                t0 = time.monotonic()
                r = c.post("/v1/models/mlp:predict", json={"instances": x.tolist()})
                times.append(time.monotonic() - t0)
                assert_same(r.json()["predictions"], want(x), "auto-batched request")
    assert times[0] < 0.25  # nothing measured yet: eager
    if waits:
        waited = [t >= 0.27 for t in times[1:]]
        assert waited == [True, True, True, False, True, False], times
    else:
        assert max(times[1:]) < 0.25, times


class _TimedModel:
    """A model whose batches take ``seconds``: waiting off the CPU (``busy`` False: as a worker does
    that waits for the GIL or for a core) or computing (``busy`` True)."""
    backend, fixed_batch, outputs = "test", None, ["output"]

    def __init__(self, seconds: float, busy: bool):
        self.seconds, self.busy = seconds, busy

    def run(self, feeds):
        if self.busy:
            end = time.thread_time() + self.seconds
            while time.thread_time() < end:
                pass
        else:
            time.sleep(self.seconds)
        return {"output": feeds["x"] * 2}

    def close(self):
        pass


@pytest.mark.parametrize("busy", [False, True])
def test_auto_batching_measures_compute_not_waiting(busy):
    """auto's measure is the worker's CPU time: batches that take 20 ms of waiting (a loaded server's
    GIL and run-queue waits) leave it full, 20 ms of compute makes it eager (threshold 1 ms)."""
    from forgegrad.serve.batching import Batcher

    async def go():
        # max_batch 1: every batch is full, so only the compute measure decides (not _after_wait)
        b = Batcher(_TimedModel(0.02, busy), "timed/1", max_batch=1, max_delay_s=0.0, max_queue=8,
                    policy="auto", auto_eager_s=1e-3)
        b.start()
        outs = [await b.submit({"x": np.full((1, 2), i, np.float32)}) for i in range(3)]
        eager = b.eager
        await b.close()
        return outs, eager

    outs, eager = asyncio.run(go())
    assert eager is busy
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out["output"], np.full((1, 2), 2.0 * i, np.float32))


def test_auto_batching_predicts_a_full_batch_from_smaller_ones():
    """auto's cost model: 0.3 ms per batch + 0.01 ms per row, seen on batches of 10-20 rows, predicts
    0.62 ms for 32 rows (scaling the mean per-row cost would say ~1.1 ms and turn auto eager); batches
    of one size fall back to that proportional estimate; cost that falls with rows is noise."""
    from forgegrad.serve.batching import _CostFit
    fit = _CostFit()
    for rows in [10, 20, 14, 18, 11, 16, 20, 12] * 3:
        fit.add(rows, 0.3e-3 + 0.01e-3 * rows)
    assert fit.predict(32) == pytest.approx(0.62e-3, rel=1e-6)
    lone = _CostFit()
    for _ in range(10):
        lone.add(1, 0.07e-3)
    assert lone.predict(32) == pytest.approx(32 * 0.07e-3)
    noisy = _CostFit()
    for rows, seconds in [(10, 0.5e-3), (20, 0.4e-3), (10, 0.5e-3), (20, 0.4e-3)]:
        noisy.add(rows, seconds)
    assert 0.4e-3 < noisy.predict(32) < 0.5e-3


def test_auto_backs_off_only_when_full_batch_waits_keep_running_out():
    """auto's fill rule, on the worker's own record of its full-policy waits (max_batch 32): one wait
    that runs out with a few rows (a hiccup) leaves it full; three in a row under half full, or eight
    in a row of 16-31 rows (16 closed-loop clients), make it eager; a batch that fills resets both."""
    from forgegrad.serve.batching import Batcher
    b = Batcher(_TimedModel(0.0, False), "timed/1", max_batch=32, max_delay_s=0.005, max_queue=8, policy="auto")
    b.eager = b._compute_eager = False

    def waits(*rows):
        for r in rows:
            b._after_wait(r, ran_out=r < 32)
            b._refresh_eager()
        return b.eager

    assert not waits(3, 32, 5, 32, 2, 20, 32)  # hiccups between full batches
    assert waits(4, 9, 3)
    b._fill_eager_until = 0.0
    assert not waits(32) and b._short_waits == 0
    assert not waits(*[16] * 7) and waits(16)
    b._fill_eager_until = 0.0
    assert waits(24)  # a retry after the back-off: one more wait that runs out is enough


def test_eager_batches_do_not_wait_for_requests_nobody_is_sending(repo):
    """--eager: with a 60 s max-delay a lone request is still answered at once (the client's 30 s
    timeout would fail it otherwise), concurrent ones are still answered correctly, and a bad request
    being received does not hold a batch back after it fails."""
    root, models, _ = repo
    want = lambda x: direct(models["mlp_v2"], x)  # noqa: E731
    with running_server(str(root), max_batch=64, max_delay_ms=60_000, poll_s=0, eager=True) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(3):
                x = example("mlp", 1 + i, seed=i)
                assert_same(c.post("/v1/models/mlp:predict", json={"instances": x.tolist()}).json()["predictions"],
                            want(x), "lone eager request")
            assert c.post("/v1/models/mlp:predict", json={"instances": [[1.0]]}).status_code == 400
            x = example("mlp", 2)
            assert_same(c.post("/predictions/mlp", json=x.tolist()).json(), want(x), "after a bad request")
        xs = [example("mlp", 1, seed=50 + i) for i in range(16)]

        async def fire():
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                return await asyncio.gather(*(c.post("/v1/models/mlp:predict", json={"instances": x.tolist()})
                                              for x in xs))

        for x, r in zip(xs, asyncio.run(fire())):
            assert_same(r.json()["predictions"], want(x), "concurrent eager requests")
