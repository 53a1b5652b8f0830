"""A bounded HTTP load generator for loopback servers (``forgegrad bench serve`` and the soak test).

``concurrency`` clients each send one request, wait for its answer and send the next, until
``duration_s`` has passed or ``max_requests`` have been sent; latencies are measured per request.
Only loopback addresses are accepted: this is for measuring a server on this machine, not for
loading anyone else's."""
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
    latencies: List[float] = field(default_factory=list)  # seconds, answered requests only
    codes: Dict[int, int] = field(default_factory=dict)
    errors: Dict[str, int] = field(default_factory=dict)  # transport errors by exception type

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


async def _load(url, body, headers, concurrency, duration_s, max_requests, timeout_s):
    import httpx
    result = LoadResult(concurrency, 0.0)
    codes, errors = collections.Counter(), collections.Counter()
    sent = [0]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
        start = time.perf_counter()
        end = start + duration_s

        async def worker():
            while time.perf_counter() < end and (max_requests is None or sent[0] < max_requests):
                sent[0] += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, content=body, headers=headers)
                except httpx.HTTPError as e:
                    errors[type(e).__name__] += 1
                    continue
                result.latencies.append(time.perf_counter() - t0)
                codes[r.status_code] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
    result.codes, result.errors = dict(codes), dict(errors)
    return result


def run_load(url: str, body: bytes, headers: Optional[Dict[str, str]] = None, concurrency: int = 1,
             duration_s: float = 2.0, max_requests: Optional[int] = None, timeout_s: float = 30.0) -> LoadResult:
    """POST ``body`` to ``url`` from ``concurrency`` clients for ``duration_s`` seconds (at most
    ``max_requests`` in all); blocks until done."""
    check_loopback(url)
    if concurrency < 1 or not 0 < duration_s <= 3600:
        raise ValueError(f"concurrency must be >= 1 and duration_s in (0, 3600], got {concurrency}, {duration_s}")
    return asyncio.run(_load(url, body, dict(headers or {}), concurrency, duration_s, max_requests, timeout_s))
