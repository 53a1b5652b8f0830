"""What the OpenAI-style apps (completions.py, embeddings.py) share: JSON answers and errors in OpenAI's shape,
a body read up to a size limit, the POST route wrapper that turns errors into answers and counts requests, and
the routes besides the API's own (``GET /v1/models``, ``/ping``, ``/health``, ``/metrics``, 404/405)."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Awaitable, Callable, Optional

from .completion_request import CompletionError

log = logging.getLogger("forgegrad.serve")


def ok(obj):
    from starlette.responses import Response
    return Response(json.dumps(obj, separators=(",", ":")), 200, media_type="application/json")


def failed(e: CompletionError):
    from starlette.responses import Response
    return Response(json.dumps(e.body()), e.status, headers=e.headers, media_type="application/json")


async def load_served(app, config, executor, factory, *args):
    """``factory(config.model_path, config.weights, *args)`` run on ``executor`` (model loading must not block the
    event loop), forgegrad's threads set first (``config.threads``), its ``model`` then frozen in place unless
    ``config.freeze`` is False (``served_model``). A failure is kept in ``app.state.startup_error`` (what /health
    reports) and raised as a RuntimeError that names the model."""
    if config.threads:
        from .models import set_forgegrad_threads
        set_forgegrad_threads(config.threads)
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, served_model, config, factory, args)
    except Exception as e:
        app.state.startup_error = f"cannot serve {config.model_path}: {type(e).__name__}: {e}"
        raise RuntimeError(app.state.startup_error) from None


def served_model(config, factory, args=()):
    """``factory(config.model_path, config.weights, *args)``, its ``model`` frozen in place
    (``nn.utils.freeze(model, inplace=True)``: read-only, its float32 Linear weights packed once for the GEMM, the
    same outputs bit for bit) unless ``config.freeze`` is False, or the packed copies would take more than half the
    memory available now (``available_bytes``: a container's cgroup limit counts; ``freeze_fits``: a large float32
    decoder is then served as loaded, with a warning, rather than run out of memory). In place, not a copy: the
    server holds the weights once, plus the packed copies."""
    worker = factory(config.model_path, config.weights, *args)
    if config.freeze:
        freeze_in_place(worker.model, config.model_path)
    return worker


def freeze_in_place(model, name: str) -> bool:
    """``nn.utils.freeze(model, inplace=True)`` where ``freeze_fits`` the memory available now, logged under
    ``name`` (the model's path); True if frozen. The servers and ``forgegrad generate`` / ``transcribe`` freeze the
    Hugging Face models they load through this one check (``--no-freeze`` skips the call)."""
    from ..nn.utils.freeze import freeze, packed_nbytes
    why = freeze_fits(model, available_bytes())
    if why is not None:
        log.warning("%s: not frozen: %s; running the model as loaded (--no-freeze says so up front)", name, why)
        return False
    freeze(model, inplace=True)
    log.info("%s: frozen in place, %.0f MiB of packed weights (--no-freeze runs the model as loaded)",
             name, packed_nbytes(model) / 2**20)
    return True


def freeze_fits(model, available: Optional[int]) -> Optional[str]:
    """None when freezing ``model`` would take at most half of ``available`` bytes (None: unknown, taken as enough):
    its float32 Linear weights' packed copies, about their size. Else why not."""
    from ..nn import Dense, Linear
    need = sum(m.weight.numpy().nbytes for m in model.modules()
               if isinstance(m, (Linear, Dense)) and m._parameters.get("weight") is not None
               and m.weight.numpy().dtype == "float32")
    if available is None or need <= available // 2:
        return None
    return (f"its packed weights ({need / 2**20:.0f} MiB) would take more than half the memory available "
            f"({available / 2**20:.0f} MiB)")


def available_bytes(meminfo: str = "/proc/meminfo", cgroup: str = "/sys/fs/cgroup") -> Optional[int]:
    """The bytes this process may still take: MemAvailable of ``meminfo``, or less where its cgroup (a container's)
    limits it: v2's memory.max less memory.current, v1's memory/memory.limit_in_bytes less memory.usage_in_bytes
    (the host's MemAvailable overstates a container's room). None where there is no MemAvailable (not Linux)."""
    try:
        with open(meminfo, encoding="ascii") as f:
            host = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
    except (OSError, ValueError, IndexError):
        return None
    if host is None:
        return None
    for limit, usage in (("memory.max", "memory.current"),
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            with open(os.path.join(cgroup, limit), encoding="ascii") as f:
                cap = f.read().strip()
            if cap == "max":  # v2: no limit
                break
            with open(os.path.join(cgroup, usage), encoding="ascii") as f:
                return max(0, min(host, int(cap) - int(f.read().strip())))  # v1's "no limit" is huge: host
        except (OSError, ValueError):
            continue
    return host


async def read_body(request, limit: int) -> bytes:
    """The request's body, or a 413 once it is larger than ``limit`` bytes (declared or as it arrives)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise CompletionError(413, f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise CompletionError(413, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def post_route(route: str, answer: Callable[..., Awaitable], metrics, name: str):
    """``POST route`` answered by ``await answer(request)``: a CompletionError becomes its JSON answer, a client
    that went away a 499, anything else a logged 500; every request is counted in ``metrics``."""
    from starlette.requests import ClientDisconnect
    from starlette.routing import Route

    async def handle(request):
        t0 = time.perf_counter()
        try:
            response = await answer(request)
        except CompletionError as e:
            response = failed(e)
        except ClientDisconnect:
            response = failed(CompletionError(499, "client closed the connection"))
        except Exception as e:
            log.exception("unexpected error on POST %s", route)
            response = failed(CompletionError(500, f"internal error ({type(e).__name__})"))
        metrics.request(route, name, response.status_code, time.perf_counter() - t0)
        return response
    return Route(route, handle, methods=["POST"])


def common_routes(name: str, created: int, context: Callable[[], int], metrics) -> list:
    """``GET /v1/models`` (the served model, ``max_model_len`` from ``context()``), ``/ping``, ``/health`` and
    ``/metrics``."""
    from starlette.responses import Response
    from starlette.routing import Route

    async def models(request):
        return ok({"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                               "owned_by": "forgegrad", "max_model_len": context()}]})

    async def ping(request):
        return ok({"status": "healthy"})

    async def metrics_route(request):
        body, content_type = metrics.render()
        return Response(body, 200, media_type=content_type)

    return [Route("/v1/models", models, methods=["GET"]), Route("/ping", ping, methods=["GET"]),
            Route("/health", ping, methods=["GET"]), Route("/metrics", metrics_route, methods=["GET"])]


async def not_found(request, exc):
    """404 and 405 in OpenAI's error shape."""
    status = getattr(exc, "status_code", 404)
    what = "no such route" if status == 404 else "method not allowed"
    return failed(CompletionError(status, f"{request.method} {request.url.path}: {what}"))
