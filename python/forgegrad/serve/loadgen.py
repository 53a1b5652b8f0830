"""A bounded HTTP load generator for loopback servers (``forgegrad bench serve`` and the soak test).

``concurrency`` clients each send one request, wait for its answer and send the next, until
``duration_s`` has passed or ``max_requests`` have been sent; latencies are measured per request.
Only loopback addresses are accepted: this is for measuring a server on this machine, not for
loading anyone else's.

Two clients: "httpx" (httpx.AsyncClient, a real HTTP client; the tests use it) and "raw" (one
keep-alive HTTP/1.1 connection per client on asyncio streams, reading Content-Length bodies). On a
machine with few cores the load generator competes with the server for CPU, and httpx spends about
a millisecond of CPU per request, enough to make the client the bottleneck; the raw client spends a
small fraction of that, so ``bench serve`` uses it to measure the servers rather than the client.
"""
from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional
from urllib.parse import urlsplit

import numpy as np

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    latencies: List[float] = field(default_factory=list)  # seconds, answered requests sent in the window
    codes: Dict[int, int] = field(default_factory=dict)  # answers by status (the whole run, ramps included)
    errors: Dict[str, int] = field(default_factory=dict)  # transport errors by exception type (the whole run)

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        """Answered requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1e3) if self.latencies else float("nan")

    def summary(self) -> Dict[str, float]:
        return {"requests": self.requests, "throughput": self.throughput, "p50_ms": self.percentile_ms(50),
                "p95_ms": self.percentile_ms(95), "p99_ms": self.percentile_ms(99)}


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"the load generator only targets loopback addresses ({', '.join(LOOPBACK)}), got {url!r}")


class _RawConnection:
    """One keep-alive HTTP/1.1 connection: POST, then read the status line, headers and a
    Content-Length body (all this server family sends)."""

    def __init__(self, host, port, path, body, headers):
        self.host, self.port = host, port
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        self.reader = self.writer = None

    async def post(self, timeout_s):
        if self.writer is None:
            self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout_s)
        self.writer.write(self.request)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout_s)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, close = None, False
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            if k == "content-length":
                length = int(v)
            elif k == "connection" and v.strip().lower() == "close":
                close = True
        if length is None:
            raise ConnectionError("response without Content-Length")
        await asyncio.wait_for(self.reader.readexactly(length), timeout_s)
        if close:
            self.close()
        return status

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = self.reader = None


async def _load_raw(url, body, headers, concurrency, window, max_requests, timeout_s):
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    result = LoadResult(concurrency, 0.0)
    codes, errors = collections.Counter(), collections.Counter()
    sent = [0]
    window.start()

    async def worker():
        conn = _RawConnection(parts.hostname, parts.port or 80, path, body, headers)
        try:
            while time.perf_counter() < window.stop and (max_requests is None or sent[0] < max_requests):
                t0 = time.perf_counter()
                counted = window.counts(t0)
                sent[0] += counted
                try:
                    status = await conn.post(timeout_s)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError,
                        ValueError) as e:
                    errors[type(e).__name__] += 1
                    conn.close()
                    continue
                if counted:
                    result.latencies.append(time.perf_counter() - t0)
                codes[status] += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = min(time.perf_counter(), window.end) - window.begin
    result.codes, result.errors = dict(codes), dict(errors)
    return result


async def _load(url, body, headers, concurrency, window, max_requests, timeout_s):
    import httpx
    result = LoadResult(concurrency, 0.0)
    codes, errors = collections.Counter(), collections.Counter()
    sent = [0]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
        window.start()

        async def worker():
            while time.perf_counter() < window.stop and (max_requests is None or sent[0] < max_requests):
                t0 = time.perf_counter()
                counted = window.counts(t0)
                sent[0] += counted
                try:
                    r = await client.post(url, content=body, headers=headers)
                except httpx.HTTPError as e:
                    errors[type(e).__name__] += 1
                    continue
                if counted:
                    result.latencies.append(time.perf_counter() - t0)
                codes[r.status_code] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = min(time.perf_counter(), window.end) - window.begin
    result.codes, result.errors = dict(codes), dict(errors)
    return result


def run_load(url: str, body: bytes, headers: Optional[Dict[str, str]] = None, concurrency: int = 1,
             duration_s: float = 2.0, max_requests: Optional[int] = None, timeout_s: float = 30.0,
             client: str = "httpx", warmup_s: float = 0.0, cooldown_s: float = 0.0) -> LoadResult:
    """POST ``body`` to ``url`` from ``concurrency`` clients for ``duration_s`` seconds (at most
    ``max_requests`` in all) with the "httpx" or "raw" client; blocks until done.

    ``warmup_s`` / ``cooldown_s``: the clients also send for that long before / after the measured
    window, and only requests sent inside it are counted. The ramps are where a closed-loop test is not
    in its steady state: connections open, and at the end the clients stop one by one, so the last
    requests find a batching server waiting for a batch that no longer fills. Status codes and
    transport errors are counted over the whole run."""
    check_loopback(url)
    if concurrency < 1 or not 0 < duration_s <= 3600:
        raise ValueError(f"concurrency must be >= 1 and duration_s in (0, 3600], got {concurrency}, {duration_s}")
    if not (0 <= warmup_s <= 3600 and 0 <= cooldown_s <= 3600):
        raise ValueError(f"warmup_s and cooldown_s must be in [0, 3600], got {warmup_s}, {cooldown_s}")
    if client not in ("httpx", "raw"):
        raise ValueError(f"client must be 'httpx' or 'raw', got {client!r}")
    fn = _load_raw if client == "raw" else _load
    window = _Window(warmup_s, duration_s, cooldown_s)
    return asyncio.run(fn(url, body, dict(headers or {}), concurrency, window, max_requests, timeout_s))


class _Window:
    """The measured window [begin, end) of a run that sends until ``stop`` (times from ``start()``)."""

    def __init__(self, warmup_s: float, duration_s: float, cooldown_s: float):
        self.warmup_s, self.duration_s, self.cooldown_s = warmup_s, duration_s, cooldown_s

    def start(self) -> None:
        self.begin = time.perf_counter() + self.warmup_s
        self.end = self.begin + self.duration_s
        self.stop = self.end + self.cooldown_s

    def counts(self, t0: float) -> bool:
        return self.begin <= t0 < self.end
