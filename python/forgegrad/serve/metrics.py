"""Prometheus metrics of one server (its own registry, so several servers in one process do not
collide): requests by route, model and status code; request latency; batch sizes and batch compute
time; queue depth.

Label values are bounded: ``route`` is the route's template (not the URL), ``model`` is a served
model's name or "" (a request for an unknown name does not create a new series per name)."""
from __future__ import annotations

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self):
        try:
            import prometheus_client as pc
        except ImportError:
            raise ImportError('forgegrad serve needs prometheus-client: pip install "forgegrad[serve]"') from None
        self._pc = pc
        self.registry = pc.CollectorRegistry()
        r = self.registry
        self.requests = pc.Counter("forgegrad_requests", "HTTP requests by route, model and status code",
                                   ["route", "model", "code"], registry=r)
        self.latency = pc.Histogram("forgegrad_request_latency_seconds", "request latency (receive to response)",
                                    ["route", "model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = pc.Histogram("forgegrad_batch_size", "rows per model call", ["model"],
                                       buckets=_BATCH_BUCKETS, registry=r)
        self.batch_seconds = pc.Histogram("forgegrad_batch_compute_seconds", "seconds per model call (one batch)",
                                          ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.depth = pc.Gauge("forgegrad_queue_depth", "requests waiting to be batched", ["model"], registry=r)
        self.loaded = pc.Gauge("forgegrad_model_versions_loaded", "model versions being served", ["model"],
                               registry=r)
        # labelled children by label values: `labels()` validates and hashes its arguments on every
        # call (~10 us a request on the hot path); the label sets are bounded (see above)
        self._children = {}

    def _child(self, metric, *values):
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    @staticmethod
    def _model(label: str) -> str:
        return label.split("/")[0]  # "name/version" -> name: one series per model, not per version

    def request(self, route: str, model: str, code: int, seconds: float) -> None:
        self._child(self.requests, route, model, str(code)).inc()
        self._child(self.latency, route, model).observe(seconds)

    def batch(self, label: str, rows: int, seconds: float) -> None:
        m = self._model(label)
        self._child(self.batch_size, m).observe(rows)
        self._child(self.batch_seconds, m).observe(seconds)

    def queue_depth(self, label: str, depth: int) -> None:
        self._child(self.depth, label).set(depth)

    def versions(self, model: str, n: int) -> None:
        self.loaded.labels(model).set(n)

    def prefix_cache(self, model: str, cache) -> None:
        """Expose a PrefixCache's counters (serve/prefix_cache.py), read at each scrape: prompts that reused cached
        keys (hits) or none (misses), prompt tokens read from it, blocks evicted, and the bytes and blocks held."""
        self.registry.register(_PrefixCacheCollector(model, cache))

    def kv_cache(self, model: str, pool) -> None:
        """Expose the paged KV cache's counters (serve/kv_pool.py), read at each scrape: its blocks, those held by a
        row or the prefix cache, the most held at once, those reserved, the prompts that waited for blocks, the rows
        preempted for blocks and the tokens prefilled again for them."""
        self.registry.register(_PrefixCacheCollector(model, pool, "kv_cache", _KV_FIELDS))

    def render(self):
        """(body, content type) of the text exposition format."""
        return self._pc.generate_latest(self.registry), self._pc.CONTENT_TYPE_LATEST


class _PrefixCacheCollector:
    """The prefix cache's counters as metric families; the engine's thread writes them, a scrape reads them (ints)."""

    _FIELDS = (("hits", "counter", "prompts whose prefill started from cached keys and values"),
               ("misses", "counter", "prompts that found no cached prefix"),
               ("hit_tokens", "counter", "prompt tokens read from the prefix cache instead of prefilled"),
               ("evictions", "counter", "prefix cache blocks dropped for room (least recently used first)"),
               ("bytes", "gauge", "bytes of keys and values in the prefix cache"),
               ("blocks", "gauge", "blocks in the prefix cache"))

    def __init__(self, model: str, cache, prefix: str = "prefix_cache", fields=None):
        from prometheus_client import core
        self._core, self.model, self.cache = core, model, cache
        self.prefix, self.fields = prefix, fields or self._FIELDS

    def describe(self):
        return []  # nothing to check names against: the server registers one cache

    def collect(self):
        for name, kind, doc in self.fields:
            value = len(self.cache) if name == "blocks" and self.prefix == "prefix_cache" else getattr(self.cache, name)
            family = (self._core.CounterMetricFamily if kind == "counter" else self._core.GaugeMetricFamily)(
                f"forgegrad_{self.prefix}_{name}", doc, labels=["model"])
            family.add_metric([self.model], value)
            yield family


_KV_FIELDS = (("blocks", "gauge", "paged KV cache blocks (each: prefix_block tokens, 16 by default)"),
              ("in_use", "gauge", "KV cache blocks held by a decoding row or the prefix cache"),
              ("peak", "gauge", "the most KV cache blocks held at once"),
              ("reserved", "gauge", "KV cache blocks promised to rows and not yet written"),
              ("waits", "counter", "times a prompt waited for KV cache blocks (the cache was full)"),
              ("preemptions", "counter", "rows (or prompts being prefilled) that let their KV cache blocks go for "
               "others' because the cache was full, to be prefilled again"),
              ("recomputed_tokens", "counter", "tokens prefilled again for preempted rows and prompts (those not found "
               "in the prefix cache)"))
