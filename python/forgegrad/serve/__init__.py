"""forgegrad.serve: a model server with dynamic batching (``forgegrad serve``).

It serves forgegrad checkpoints (zoo config + safetensors weights, as ``forgegrad train`` writes them)
on forgegrad's kernels and ONNX files on onnxruntime, in TF Serving's directory layout (``NAME/1/``,
``NAME/2/``: the newest version is served, older ones can be pinned, new ones are picked up without
a restart), behind TF Serving's and TorchServe's REST routes, with JSON and ``.npy`` bodies and
Prometheus metrics. Needs the ``serve`` extra (starlette, uvicorn, prometheus-client); see
docs/serving.md.

Layout of the package: codecs.py (request bodies <-> arrays), models.py (a loaded version on one
backend), repository.py (versions on disk, polling), batching.py (the per-model queue),
metrics.py, app.py (routes), reference.py (the one-request-per-call server `bench serve` compares
with), loadgen.py (the bounded loopback load generator).

A Hugging Face decoder directory is served for text generation instead, behind OpenAI's completions
and chat completions APIs: completions.py (the app and its generation worker), completion_request.py
(the request bodies), completion_format.py (the answers). A Whisper directory is served for speech to text,
behind OpenAI's audio API: speech_app.py (the app), speech_request.py (the multipart bodies and the answers).
"""
from __future__ import annotations

from ._errors import ServeError

__all__ = ["ServeError", "ServeConfig", "create_app"]


def __getattr__(name):  # starlette is optional: import the app only when it is asked for
    if name in ("ServeConfig", "create_app"):
        from . import app
        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
