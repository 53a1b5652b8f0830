"""The ASGI application: TF Serving's and TorchServe's REST routes over the model repository.

    POST /v1/models/NAME[/versions/N]:predict   {"instances": [...]} or {"inputs": ...} (or an .npy body)
    GET  /v1/models/NAME[/versions/N]           version status;  .../metadata: inputs and outputs
    POST /predictions/NAME[/VERSION]            TorchServe: a JSON tensor or an .npy body
    GET  /ping  /models  /metrics               health, served models, Prometheus text format

Errors are JSON ``{"error": "..."}`` with a 4xx status for anything the client sent (413 for a body
over --max-body-bytes, 404 for an unknown model or version, 503 + Retry-After when a queue is full).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

from . import codecs
from ._errors import ServeError

log = logging.getLogger("forgegrad.serve")


def _require():
    try:
        import starlette  # noqa: F401
    except ImportError:
        raise ImportError('forgegrad serve needs starlette and uvicorn: pip install "forgegrad[serve]"') from None


@dataclass
class ServeConfig:
    """Settings of ``forgegrad serve`` (the command-line flags of the same names)."""
    model_path: str
    max_batch: int = 32
    max_delay_ms: float = 5.0
    max_queue: int = 512
    max_body_bytes: int = 16 * 1024 * 1024
    backend: str = "auto"
    threads: Optional[int] = None
    poll_s: float = 1.0
    model_name: Optional[str] = None
    allow_nonfinite: bool = False
    batching: str = "auto"  # "auto", "full" or "eager": see forgegrad.serve.batching.Batcher
    eager: bool = False  # the same as batching="eager"
    auto_eager_ms: float = 1.0  # batching="auto": eager while a full batch computes at least this long

    def validate(self) -> "ServeConfig":
        from .models import BACKENDS
        for name in ("max_batch", "max_queue", "max_body_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not self.max_delay_ms >= 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {self.max_delay_ms!r}")
        if not self.poll_s >= 0:
            raise ValueError(f"poll_s must be >= 0 (0: no polling), got {self.poll_s!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        from .batching import POLICIES
        if self.batching not in POLICIES:
            raise ValueError(f"batching must be one of {', '.join(POLICIES)}, got {self.batching!r}")
        if not self.auto_eager_ms >= 0:
            raise ValueError(f"auto_eager_ms must be >= 0, got {self.auto_eager_ms!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer, got {self.threads!r}")
        return self


def _parse_version(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # "²" is a digit to isdigit, not to int
        raise ServeError(400, f"version must be a non-negative integer, got {text!r}")
    return int(text)


def _tf_target(rest: str):
    """'NAME[/versions/N][:verb|/metadata]' -> (name, version or None, verb or None)."""
    verb = None
    if ":" in rest:
        rest, verb = rest.rsplit(":", 1)
    parts = rest.split("/")
    metadata = len(parts) > 1 and parts[-1] == "metadata"
    if metadata:
        parts = parts[:-1]
    if len(parts) == 1 and parts[0]:
        name, version = parts[0], None
    elif len(parts) == 3 and parts[0] and parts[1] == "versions":
        name, version = parts[0], _parse_version(parts[2])
    else:
        raise ServeError(404, f"no such route /v1/models/{rest}: expected /v1/models/NAME[/versions/N][:predict]")
    if metadata:
        if verb is not None:
            raise ServeError(404, "no such route: metadata takes no :verb")
        verb = "metadata"
    return name, version, verb


def create_app(config: ServeConfig):
    """The Starlette app serving ``config.model_path`` (the repository loads at startup)."""
    _require()
    import contextlib

    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect
    from starlette.responses import Response
    from starlette.routing import Route

    from .batching import Batcher
    from .fast_routes import TF_ROUTE, TS_ROUTE, TS_VERSION_ROUTE, PredictRoutes
    from .metrics import Metrics
    from .repository import Repository

    config.validate()
    metrics = Metrics()

    def make_batcher(model, label):
        return Batcher(model, label, config.max_batch, config.max_delay_ms / 1e3, config.max_queue, metrics,
                       policy="eager" if config.eager else config.batching, auto_eager_s=config.auto_eager_ms / 1e3)

    if config.threads:
        from .models import set_forgegrad_threads
        set_forgegrad_threads(config.threads)
    repo = Repository(config.model_path, make_batcher, config.backend, config.threads, config.model_name,
                      config.poll_s, metrics)

    def error(status, message, headers=None):
        return Response(codecs.json_bytes({"error": message}), status, headers=headers, media_type=codecs.JSON_TYPE)

    def ok(obj, status=200, finite=False):
        return Response(codecs.json_bytes(obj, finite), status, media_type=codecs.JSON_TYPE)

    async def handled(route, request, fn):
        """Run a handler; turn ServeErrors into JSON errors, anything else into a logged 500; count it."""
        t0 = time.perf_counter()
        label = {"model": "", "route": route}
        try:
            response = await fn(request, label)
        except ServeError as e:
            response = error(e.status, e.message, e.headers)
        except ClientDisconnect:  # the client went away mid-body: nobody to answer (nginx's 499)
            response = error(499, "client closed the connection")
        except Exception as e:
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            response = error(500, f"internal error ({type(e).__name__})")
        metrics.request(label["route"], label["model"], response.status_code, time.perf_counter() - t0)
        return response

    # Bodies are decoded on the event loop: json.loads and np.load hold the GIL, so a thread would
    # not free the loop, only add a handoff.
    def tf_decode(body, content_type, inputs):
        if codecs.is_npy(content_type):
            if len(inputs) != 1:
                raise ServeError(400, "an .npy body needs a model with one input")
            arr = codecs.conform(codecs.parse_npy(body), inputs[0], "body", config.allow_nonfinite)
            return {inputs[0].name: arr}, "columnar"
        return codecs.tf_body(body, inputs, config.allow_nonfinite)

    def respond(request, outputs, json_obj):
        if codecs.wants_npy(request.headers.get("accept")):
            if len(outputs) != 1:
                raise ServeError(406, "an .npy response needs a model with one output; accept application/json")
            return Response(codecs.npy_bytes(next(iter(outputs.values()))), 200, media_type="application/x-npy")
        return ok(json_obj, finite=codecs.all_finite(outputs))

    async def tf_models(request, label):
        name, version, verb = _tf_target(request.path_params["rest"])
        label["route"] = "/v1/models/{name}" + {None: "", "metadata": "/metadata"}.get(verb, f":{verb}")
        if request.method == "GET":
            if verb == "metadata":
                v = repo.get(name, version)
                label["model"] = name
                return ok({"model_spec": {"name": name, "version": str(v.number)},
                           "metadata": {"backend": v.model.backend,
                                        "inputs": [i.describe() for i in v.model.inputs],
                                        "outputs": list(v.model.outputs)}})
            if verb is not None:
                raise ServeError(405, f"GET does not take :{verb}")
            entries = repo.status(name, version)
            label["model"] = name
            return ok({"model_version_status": entries})
        if verb != "predict":
            label["route"] = "/v1/models/{name}"  # not one series per verb a client makes up
            raise ServeError(404 if verb is None else 400,
                             f"unsupported verb {verb!r}: this server implements :predict" if verb else
                             "POST needs :predict (POST /v1/models/NAME[/versions/N]:predict)")
        v = repo.get(name, version)
        label["model"] = name
        with v.batcher.arriving() as ticket:
            body = await codecs.read_body(request, config.max_body_bytes)
            feeds, form = tf_decode(body, request.headers.get("content-type"), v.model.inputs)
            outputs = await v.batcher.submit(feeds, ticket)
        return respond(request, outputs, codecs.tf_response(outputs, form))

    async def predictions(request, label):
        name = request.path_params["name"]
        version = request.path_params.get("version")
        v = repo.get(name, None if version is None else _parse_version(version))
        label["model"] = name
        with v.batcher.arriving() as ticket:
            body = await codecs.read_body(request, config.max_body_bytes)
            feeds, batched = codecs.torchserve_request(body, request.headers.get("content-type"), v.model.inputs,
                                                       config.allow_nonfinite)
            outputs = await v.batcher.submit(feeds, ticket)
        if codecs.wants_npy(request.headers.get("accept")) and not batched:
            outputs = {k: a[0] for k, a in outputs.items()}
        return respond(request, outputs, codecs.output_rows(outputs, batched))

    async def ping(request, label):
        return ok({"status": "Healthy"})

    async def list_models(request, label):
        return ok({"models": [{"modelName": n, "versions": [str(v) for v in sorted(vs, reverse=True)],
                               "modelUrl": vs[max(vs)].path} for n, vs in sorted(repo.models.items())]})

    async def metrics_route(request, label):
        body, ctype = metrics.render()
        return Response(body, 200, media_type=ctype.split(";")[0], headers={"Content-Type": ctype})

    def route(path, fn, methods):
        async def endpoint(request):
            return await handled(path, request, fn)
        return Route(path, endpoint, methods=methods)

    async def not_found(request, exc):
        status = getattr(exc, "status_code", 404)
        return error(status, f"{request.method} {request.url.path}: " + ("no such route" if status == 404 else
                                                                         getattr(exc, "detail", "not allowed")))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await repo.start()
        if repo.kind in ("file", "checkpoint") and not repo.models:  # nothing else could ever appear
            await repo.close()
            errors = "; ".join(err for _sig, err in repo.failed.values()) or "no model found"
            app.state.startup_error = f"cannot serve {config.model_path}: {errors}"
            raise RuntimeError(app.state.startup_error)
        served = ", ".join(f"{n} (versions {', '.join(map(str, sorted(vs)))})" for n, vs in repo.models.items())
        log.info("serving %s", served or "no models yet")
        try:
            yield
        finally:
            await repo.close()

    routes = [
        route(TF_ROUTE, tf_models, ["GET", "POST"]),
        route(TS_ROUTE, predictions, ["POST"]),
        route(TS_VERSION_ROUTE, predictions, ["POST"]),
        route("/ping", ping, ["GET"]),
        route("/models", list_models, ["GET"]),
        route("/metrics", metrics_route, ["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.repository, app.state.metrics, app.state.config = repo, metrics, config
    app.state.startup_error = None
    # the same handlers, reached without Starlette's layers for the predict requests (fast_routes)
    predict_handlers = {TF_ROUTE: tf_models, TS_ROUTE: predictions, TS_VERSION_ROUTE: predictions}

    async def predict(route_template, request):
        return await handled(route_template, request, predict_handlers[route_template])

    return PredictRoutes(app, predict)
