"""The `serve` suite: ``forgegrad serve`` (dynamic batching) against a one-request-per-call server.

For the MLP (784-128-10) and LeNet (1x28x28) zoo models, with seeded random weights: forgegrad serve
runs the checkpoint on forgegrad's kernels, and its ONNX export on onnxruntime (``--backend
onnxruntime``); the reference is a minimal starlette + onnxruntime app running the same ONNX file
one request per ``session.run`` (forgegrad.serve.reference). Every server is its own process on a
free loopback port with its kernels pinned to the row's thread count; a bounded load generator
(forgegrad.serve.loadgen, its low-overhead keep-alive client) sends one-instance JSON requests from
1, 8, 32 and 128 concurrent clients, to the two servers in turn in short interleaved rounds (so a
burst of load from elsewhere on the machine hits both alike); each round measures its steady state,
between a 0.2 s ramp-up and a 0.2 s ramp-down of the same load.

Rows: "seconds" is the time per answered request (1 / throughput), so the "x reference" column is
forgegrad serve's throughput over the reference's. The details table adds p50/p95/p99 latency, the
server process's CPU time per request (and the reference's over forgegrad's: a comparison that does
not depend on what else the machine runs), the mean batch the server ran, its mean batch compute
time (from its /metrics) and the p99 bound max-delay + 3 x batch compute time. The load generator
shares the machine with the servers: on a 2-core machine every figure includes its cost. So a third
server runs in the same rounds: the bare stack (forgegrad.serve.reference --stack-only, uvicorn
reading each body and answering a fixed prediction, no model); its p99 at the same load is what
HTTP and the load generator alone cost here, and "stack bound" adds it to the p99 bound. Extra
rows for the forgegrad-backend models: .npy request bodies (32 clients), and ``--batching full`` (1 and
32 clients: the default ``auto`` policy against always waiting for a full batch or max-delay).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence

import numpy as np

from ..serve.codecs import npy_bytes
from . import suite

CONCURRENCY = (1, 8, 32, 128)
VARIANT_LABELS = {"json": "", "npy": ", .npy bodies", "full": ", --batching full"}
MAX_BATCH, MAX_DELAY_MS = 32, 5.0
OUTPUTS = 10  # numbers in every workload's prediction (the bare stack answers as many)
# each round's first and last RAMP_S are load but not measured: connections opening, and clients
# stopping one by one (the last requests would wait out max-delay for a batch that no longer fills)
RAMP_S = 0.2
CLIENT = "raw"  # loadgen's low-overhead client: on 2 cores httpx's own CPU cost would be what is measured
# (row label, served model name, zoo name, zoo kwargs, input shape, served from)
WORKLOADS = (
    ("MLP 784-128-10, forgegrad backend", "mlp", "mlp", {"in_features": 784, "out_features": 10}, (784,), "fg"),
    ("LeNet 1x28x28, forgegrad backend", "lenet", "lenet", {}, (1, 28, 28), "fg"),
    ("MLP 784-128-10 ONNX, onnxruntime backend", "mlp_onnx", "mlp", {"in_features": 784, "out_features": 10},
     (784,), "onnx"),
)


def _missing() -> List[str]:
    import importlib.util
    return [m for m in ("starlette", "uvicorn", "httpx", "prometheus_client", "onnxruntime", "onnx", "safetensors")
            if importlib.util.find_spec(m) is None]


def _prepare(root: str) -> Dict[str, str]:
    """Checkpoints and ONNX exports under root/models (served) and the ONNX path of each zoo model."""
    import forgegrad as fg
    from .. import models
    from .. import onnx as fg_onnx
    from ..cli import _checkpoint
    onnx_paths = {}
    for _label, served, zoo, kwargs, shape, source in WORKLOADS:
        if zoo in onnx_paths and source == "onnx":
            os.makedirs(os.path.join(root, "models", served, "1"), exist_ok=True)
            os.link(onnx_paths[zoo], os.path.join(root, "models", served, "1", "model.onnx"))
            continue
        fg.manual_seed(0)
        model = models.create(zoo, **kwargs).eval()
        meta = {"task": "classify", "input_kind": "flat" if len(shape) == 1 else "image",
                "input_shape": list(shape), "num_classes": 10}
        _checkpoint.save(model, meta, os.path.join(root, "models", served, "1"))
        path = os.path.join(root, "onnx", zoo + ".onnx")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fg_onnx.export(model, (fg.tensor(np.zeros((2,) + shape, np.float32)),), path)
        onnx_paths[zoo] = path
    return onnx_paths


def _port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _process(args: Sequence[str], port: int):
    """A server process on 127.0.0.1:port, up (GET /ping answers) before the body runs."""
    import httpx
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.Popen([sys.executable, "-m", *args, "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"server {' '.join(args)} exited: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {' '.join(args)} did not come up in 120 s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        proc.stderr.close()


def _batch_stats(url: str, model: str):
    """(batches, rows, compute seconds) so far for `model`, from the server's /metrics."""
    import httpx
    text = httpx.get(url + "/metrics", timeout=30).text
    vals = {"forgegrad_batch_size_count": 0.0, "forgegrad_batch_size_sum": 0.0,
            "forgegrad_batch_compute_seconds_sum": 0.0}
    for line in text.splitlines():
        for name in vals:
            if line.startswith(name + "{") and f'model="{model}"' in line:
                vals[name] += float(line.rsplit(" ", 1)[1])
    return (vals["forgegrad_batch_size_count"], vals["forgegrad_batch_size_sum"],
            vals["forgegrad_batch_compute_seconds_sum"])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far; NaN where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _measure(servers, paths, bodies, content_types, clients, duration, rounds):
    """Load each server in turn, ``rounds`` times for ``duration / rounds`` each (interleaved, so a
    burst of load from elsewhere on the machine hits every server alike); per server: (merged load
    result, server CPU ms per answered request; the CPU figure does not depend on what else the
    machine runs, unlike throughput)."""
    from ..serve.loadgen import LoadResult, run_load
    merged = [LoadResult(clients, 0.0) for _ in servers]
    cpu = [0.0] * len(servers)
    answered = [0] * len(servers)  # ramps included, as the CPU time is
    for (url, _pid), path, body, ctype in zip(servers, paths, bodies, content_types):  # warm-up
        run_load(url + path, body, {"Content-Type": ctype}, concurrency=clients, duration_s=0.3, client=CLIENT)
    for _ in range(rounds):
        for i, ((url, pid), path, body, ctype) in enumerate(zip(servers, paths, bodies, content_types)):
            cpu0 = _cpu_seconds(pid)
            r = run_load(url + path, body, {"Content-Type": ctype}, concurrency=clients,
                         duration_s=duration / rounds, client=CLIENT, warmup_s=RAMP_S, cooldown_s=RAMP_S)
            cpu[i] += _cpu_seconds(pid) - cpu0
            answered[i] += sum(r.codes.values())
            m = merged[i]
            m.seconds += r.seconds
            m.latencies += r.latencies
            for table, add in ((m.codes, r.codes), (m.errors, r.errors)):
                for k, n in add.items():
                    table[k] = table.get(k, 0) + n
    return [(m, c * 1e3 / max(n, 1)) for m, c, n in zip(merged, cpu, answered)]


def _rows(threads: int, duration: float, concurrency: Sequence[int], rounds: int) -> List[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="forgegrad-bench-serve-") as root:
        onnx_paths = _prepare(root)
        serve_args = ["forgegrad.cli", "serve", os.path.join(root, "models"), "--threads", str(threads),
                      "--max-batch", str(MAX_BATCH), "--max-delay-ms", str(MAX_DELAY_MS), "--poll-interval", "0",
                      "--log-level", "warning"]
        with contextlib.ExitStack() as stack:
            subject = stack.enter_context(_process(serve_args, _port()))
            full = stack.enter_context(_process(serve_args + ["--batching", "full"], _port()))
            refs = {zoo: stack.enter_context(_process(["forgegrad.serve.reference", path, "--threads", str(threads)],
                                                      _port()))
                    for zoo, path in onnx_paths.items()}
            bare = stack.enter_context(_process(["forgegrad.serve.reference", "--stack-only", str(OUTPUTS)], _port()))
            for label, served, zoo, _kwargs, shape, src in WORKLOADS:
                x = np.random.default_rng(1).random((1,) + shape, dtype=np.float32)
                body = json.dumps({"instances": x.tolist()}).encode()
                path = f"/v1/models/{served}:predict"
                # forgegrad serve also takes binary .npy bodies (the reference only JSON): one extra row
                # per model at 32 clients shows what skipping JSON is worth
                # and with --batching full (the policy auto chooses between it and eager) at 1 and 32 clients
                variants = [(c, "json") for c in concurrency]
                if src == "fg":
                    variants += [(c, v) for v in ("npy", "full") for c in (1, 32) if c in concurrency
                                 and (v, c) != ("npy", 1)]
                for clients, fmt in variants:
                    server = full if fmt == "full" else subject
                    b0 = _batch_stats(server[0], served)
                    ours_body, ours_type = ((npy_bytes(x), "application/x-npy") if fmt == "npy"
                                            else (body, "application/json"))
                    (ours, ours_cpu), (ref, ref_cpu), (floor, floor_cpu) = _measure(
                        [server, refs[zoo], bare], [path] * 3, [ours_body, body, ours_body],
                        [ours_type, "application/json", ours_type], clients, duration, rounds)
                    b1 = _batch_stats(server[0], served)
                    batches = max(b1[0] - b0[0], 1.0)
                    batch_ms = (b1[2] - b0[2]) / batches * 1e3
                    rows.append({
                        "workload": f"{label}, {clients} clients" + VARIANT_LABELS[fmt],
                        "threads": threads,
                        "seconds": {"forgegrad": 1 / ours.throughput if ours.throughput else None,
                                    "reference": 1 / ref.throughput if ref.throughput else None},
                        "serve": {"clients": clients, "body": fmt, "forgegrad": ours.summary(),
                                  "reference": ref.summary(), "stack": floor.summary(),
                                  "codes": {"forgegrad": ours.codes, "reference": ref.codes, "stack": floor.codes},
                                  "cpu_ms_per_request": {"forgegrad": ours_cpu, "reference": ref_cpu,
                                                         "stack": floor_cpu},
                                  "mean_batch": (b1[1] - b0[1]) / batches, "batch_ms": batch_ms,
                                  "p99_bound_ms": MAX_DELAY_MS + 3 * batch_ms,
                                  "p99_stack_bound_ms": floor.percentile_ms(99) + MAX_DELAY_MS + 3 * batch_ms}})
    return rows


def format_serve(rows: List[dict]) -> str:
    head = ["workload", "thr", "req/s", "ref req/s", "x ref", "cpu ms/req", "ref cpu", "x ref cpu", "p50 ms",
            "p95 ms", "p99 ms", "ref p99", "batch", "batch ms", "p99 bound", "p99 ok", "stack p99", "stack bound",
            "ok w/ stack"]
    lines = [head]
    for r in rows:
        s = r.get("serve")
        if s is None:
            continue
        o, f = s["forgegrad"], s["reference"]
        ratio = o["throughput"] / f["throughput"] if f["throughput"] else float("nan")
        lines.append([r["workload"], str(r["threads"]), f"{o['throughput']:.0f}", f"{f['throughput']:.0f}",
                      f"{ratio:.2f}", f"{s['cpu_ms_per_request']['forgegrad']:.2f}",
                      f"{s['cpu_ms_per_request']['reference']:.2f}",
                      f"{s['cpu_ms_per_request']['reference'] / s['cpu_ms_per_request']['forgegrad']:.2f}",
                      f"{o['p50_ms']:.1f}", f"{o['p95_ms']:.1f}",
                      f"{o['p99_ms']:.1f}",
                      f"{f['p99_ms']:.1f}", f"{s['mean_batch']:.1f}", f"{s['batch_ms']:.2f}",
                      f"{s['p99_bound_ms']:.1f}", "yes" if o["p99_ms"] <= s["p99_bound_ms"] else "no"]
                     + _stack_cells(s, o["p99_ms"]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["forgegrad serve (max-batch %d, max-delay %g ms) vs one-request-per-call starlette + onnxruntime "
           "(cpu ms/req: server process CPU time per answered request; x ref cpu: the reference's over "
           "forgegrad's; p99 bound: max-delay + 3 x batch ms; stack p99: the bare uvicorn stack's p99 at the "
           "same load, no model; stack bound: the two added):" % (MAX_BATCH, MAX_DELAY_MS)]
    for n, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _stack_cells(s: dict, p99_ms: float) -> List[str]:
    """The bare stack's columns (absent from results written before it was measured)."""
    if "stack" not in s:
        return ["-", "-", "-"]
    bound = s["p99_stack_bound_ms"]
    return [f"{s['stack']['p99_ms']:.1f}", f"{bound:.1f}", "yes" if p99_ms <= bound else "no"]


@suite("serve", details=format_serve)
def serve_suite(threads: Sequence[int], quick: bool) -> List[dict]:
    missing = _missing()
    if missing:  # reported as absent, like any runtime that is not installed
        return [{"workload": f"{w[0]} (needs {', '.join(missing)})", "threads": n,
                 "seconds": {"forgegrad": None, "reference": None}} for w in WORKLOADS for n in threads]
    duration, rounds = (1.0, 2) if quick else (3.0, 4)
    concurrency = (1, 32) if quick else CONCURRENCY
    rows = []
    for n in threads:
        rows += _rows(n, duration, concurrency, rounds)
    return rows
