"""The server of encoder checkpoints (``forgegrad serve ENCODER_DIR``): OpenAI's ``POST /v1/embeddings`` for an
encoder (embeddings.py), for a CLIP or SigLIP model, texts and images (image_embeddings.py), or for a DINOv2 encoder,
images (vision_embeddings.py), the rerank and score
APIs (``POST /v1/rerank``, ``/rerank``, ``/v1/score``, ``/score``) for a cross-encoder (rerank.py), the
classify API (``POST /v1/classify``, ``/classify``) for a classifier of several labels (classify.py) or a ViT / DeiT
/ DINOv2 / Swin / BEiT image classifier (image_classify.py); with
``GET /v1/models``, ``/ping``, ``/health``, ``/metrics``. Requests waiting run through the model together
(``EncoderQueue``)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import List, Optional

from .completion_request import CompletionError
from .completions import GenerationServeConfig
from .openai_routes import common_routes, load_served, log, not_found, ok, post_route, read_body


def encoder_kind(path: str) -> Optional[str]:
    """"embeddings", "rerank" (a one-label classifier: a cross-encoder) or "classify" (a classifier of several
    labels) for a checkpoint directory this server takes, else None."""
    from .classify import labels_of
    from .embeddings import is_embedding_checkpoint, read_json
    from .image_classify import is_image_classifier_checkpoint
    from .image_embeddings import is_image_text_checkpoint
    from .rerank import is_reranker_checkpoint
    from .vision_embeddings import is_vision_embedding_checkpoint
    if is_embedding_checkpoint(path) or is_image_text_checkpoint(path) or is_vision_embedding_checkpoint(path):
        return "embeddings"
    if is_image_classifier_checkpoint(path):
        return "classify"
    if not is_reranker_checkpoint(path):
        return None
    return "rerank" if labels_of(read_json(os.path.join(path, "config.json"), "config.json")) == 1 else "classify"


_NOTHING = object()  # EncoderQueue holds no request (None there is the close)


class EncoderQueue:
    """Requests run together: one thread takes every request waiting, up to ``max_batch`` inputs (a larger one
    alone), and runs them as one ``worker.embed(inputs)`` call (rows of results, one per input); requests that arrive
    meanwhile make the next batch. So concurrent one-text requests share batches, and none waits for others that
    have not arrived (no batching delay). ``on_batch(inputs, seconds)`` is told of each batch."""

    def __init__(self, embedder, max_batch: int, on_batch=None):
        self.embedder, self.max_batch, self.on_batch = embedder, max_batch, on_batch
        self._queue: "queue.Queue[Optional[tuple]]" = queue.Queue()
        self._held = _NOTHING  # a request (or the close) taken that did not fit the batch being made
        self._thread = threading.Thread(target=self._run, name="forgegrad-encode", daemon=True)
        self._thread.start()

    def submit(self, ids: list) -> concurrent.futures.Future:
        """A future of the results of ``ids`` (one row each)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((ids, future))
        return future

    def close(self) -> None:
        self._queue.put(None)

    def _take(self) -> Optional[List[tuple]]:
        """The next batch of requests (None: closed); blocks for the first one only."""
        first = self._held if self._held is not _NOTHING else self._queue.get()
        self._held = _NOTHING
        if first is None:
            return None
        batch, rows = [first], len(first[0])
        while rows < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None or rows + len(job[0]) > self.max_batch:
                self._held = job  # next time (and a close waits behind the requests already taken)
                break
            batch.append(job)
            rows += len(job[0])
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            batch = [(ids, f) for ids, f in batch if f.set_running_or_notify_cancel()]
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                vectors = self.embedder.embed([x for ids, _ in batch for x in ids])
            except Exception as e:  # the requests get it (a 500); the queue keeps serving
                for _, f in batch:
                    f.set_exception(e)
                continue
            if self.on_batch is not None:
                self.on_batch(len(vectors), time.perf_counter() - t0)
            start = 0
            for ids, f in batch:
                f.set_result(vectors[start:start + len(ids)])
                start += len(ids)




@dataclass
class EncoderServeConfig(GenerationServeConfig):
    """Settings of ``forgegrad serve`` for an encoder checkpoint directory: a generation server's (the flags of the
    same names; ``max_batch``: the inputs, of one or several requests, run through the model together;
    ``prefill_chunk`` unused)."""


def create_encoder_app(config: EncoderServeConfig):
    """The Starlette app serving ``config.model_path``: embeddings or reranking, by the checkpoint (loaded at
    startup)."""
    import contextlib

    from starlette.applications import Starlette

    from .metrics import Metrics

    config.validate()
    kind = encoder_kind(config.model_path)
    if kind is None:
        raise ValueError(f"{config.model_path!r} holds no encoder forgegrad serves (a BERT / RoBERTa / XLM-R / "
                         "ModernBERT encoder for embeddings, a CLIP or SigLIP model for text and image embeddings, "
                         "or one of the encoders' *ForSequenceClassification models: reranking with one label, "
                         "classification with several; or a ViT / DeiT / DINOv2 / Swin / BEiT image classifier, or "
                         "a DINOv2 encoder for image embeddings)")
    from .image_classify import is_image_classifier_checkpoint
    from .image_embeddings import is_image_text_checkpoint
    from .vision_embeddings import is_vision_embedding_checkpoint
    if kind == "embeddings" and is_image_text_checkpoint(config.model_path):  # CLIP, SigLIP: texts and images
        from .image_embeddings import ImageTextEmbedder as Worker
        routes_of = ("/v1/embeddings",)
    elif kind == "embeddings" and is_vision_embedding_checkpoint(config.model_path):  # DINOv2: images only
        from .vision_embeddings import ImageEmbedder as Worker
        routes_of = ("/v1/embeddings",)
    elif kind == "embeddings":
        from .embeddings import Embedder as Worker
        routes_of = ("/v1/embeddings", "/v1/score", "/score")
    elif kind == "rerank":
        from .rerank import Reranker as Worker
        routes_of = ("/v1/rerank", "/rerank", "/v1/score", "/score")
    elif is_image_classifier_checkpoint(config.model_path):  # ViT, DeiT, DINOv2, Swin, BEiT: images
        from .image_classify import ImageClassifier as Worker
        routes_of = ("/v1/classify", "/classify")
    else:
        from .classify import Classifier as Worker
        routes_of = ("/v1/classify", "/classify")
    metrics = Metrics()
    name = config.model_name or os.path.basename(os.path.abspath(config.model_path).rstrip(os.sep))
    counted = metrics._pc.Counter("forgegrad_encoded_tokens", "tokens run through the encoder", ["model"],
                                  registry=metrics.registry).labels(name)
    loader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="forgegrad-load")
    state = {"worker": None, "queue": None, "queued": 0}

    async def run(items: list):
        """The rows of ``items`` from the queue (503 when too many requests wait)."""
        if state["queued"] >= config.max_queue:
            raise CompletionError(503, f"{state['queued']} requests are already waiting; retry later",
                                  headers={"Retry-After": "1"})
        state["queued"] += 1
        metrics.queue_depth(name, state["queued"])
        try:
            return await asyncio.wrap_future(state["queue"].submit(items))
        finally:
            state["queued"] -= 1
            metrics.queue_depth(name, state["queued"])

    async def answer(request):
        body = await read_body(request, config.max_body_bytes)
        worker = state["worker"]
        respond = worker.score if request.url.path.endswith("/score") else worker.answer
        obj, tokens = await respond(body, name, run)
        counted.inc(tokens)
        return ok(obj)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            state["worker"] = await load_served(app, config, loader, Worker, config.max_batch)
        finally:
            loader.shutdown(wait=False)
        worker = state["worker"]
        state["queue"] = EncoderQueue(worker, config.max_batch,
                                      lambda rows, seconds: metrics.batch(name, rows, seconds))
        log.info("serving %s (%s weights, %s) at %s", name, config.weights, worker.describe(), ", ".join(routes_of))
        try:
            yield
        finally:
            state["queue"].close()

    routes = [post_route(route, answer, metrics, name) for route in routes_of]
    routes += common_routes(name, int(time.time()), lambda: state["worker"].context, metrics)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.config, app.state.metrics, app.state.startup_error = config, metrics, None
    return app
