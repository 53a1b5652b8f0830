"""The reference server ``forgegrad bench serve`` compares with: a minimal starlette + onnxruntime
app as a user would write it first, one ``session.run`` per request, no batching.

    python -m forgegrad.serve.reference MODEL.onnx --port 8081 [--threads 1]

It answers ``POST /v1/models/NAME:predict`` with {"instances": [...]} like forgegrad serve, so one
load generator drives both."""
from __future__ import annotations

import argparse
import sys

import numpy as np


def create_reference_app(onnx_path: str, threads: int = 1):
    import onnxruntime as ort
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, sess_options=opts, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    async def predict(request):
        payload = await request.json()
        x = np.asarray(payload["instances"], dtype=np.float32)
        y = session.run(None, {input_name: x})[0]
        return JSONResponse({"predictions": y.tolist()})

    async def ping(request):
        return JSONResponse({"status": "Healthy"})

    return Starlette(routes=[Route("/v1/models/{name}:predict", predict, methods=["POST"]),
                             Route("/ping", ping)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m forgegrad.serve.reference",
                                description="one-request-per-call starlette + onnxruntime server (benchmark reference)")
    p.add_argument("model", help=".onnx file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    args = p.parse_args(argv)
    import uvicorn
    uvicorn.run(create_reference_app(args.model, args.threads), host=args.host, port=args.port,
                log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
