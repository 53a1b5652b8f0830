"""The servers ``forgegrad bench serve`` compares with.

    python -m forgegrad.serve.reference MODEL.onnx --port 8081 [--threads 1]
    python -m forgegrad.serve.reference --stack-only 10 --port 8082

The reference: a minimal starlette + onnxruntime app as a user would write it first, one
``session.run`` per request, no batching. It answers ``POST /v1/models/NAME:predict`` with
{"instances": [...]} like forgegrad serve, so one load generator drives both.

``--stack-only N``: the HTTP stack's own floor, a bare ASGI app on the same uvicorn (uvloop,
httptools) that reads each body and answers a fixed prediction of N numbers: no parsing, no model,
no batching. Its latency at a given number of clients is what any server costs on this machine with
the load generator beside it; a model server's p99 can only be compared with that added in."""
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


def create_stack_only_app(outputs: int):
    """The bare ASGI app of ``--stack-only``: every request's body is read and dropped, every answer
    is the same {"predictions": [[0.0, ...]]} of ``outputs`` numbers (GET /ping answers too)."""
    import json
    if outputs < 1:
        raise ValueError(f"outputs must be >= 1, got {outputs}")
    predictions = json.dumps({"predictions": [[0.0] * outputs]}).encode()
    healthy = b'{"status":"Healthy"}'

    def head(body: bytes):
        return {"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        more = True
        while more:  # the whole body is read, as a real server must
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            more = message.get("more_body", False)
        body = healthy if scope["path"] == "/ping" else predictions
        await send(head(body))
        await send({"type": "http.response.body", "body": body})

    return app


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m forgegrad.serve.reference",
                                description="one-request-per-call starlette + onnxruntime server (benchmark reference)")
    p.add_argument("model", nargs="?", help=".onnx file (not with --stack-only)")
    p.add_argument("--stack-only", type=int, metavar="N", default=None,
                   help="serve the bare stack instead: read each body, answer a fixed prediction of N numbers")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    args = p.parse_args(argv)
    if (args.model is None) == (args.stack_only is None):
        p.error("give either MODEL.onnx or --stack-only N")
    if args.stack_only is not None and args.stack_only < 1:
        p.error(f"--stack-only must be >= 1, got {args.stack_only}")
    import uvicorn
    app = (create_stack_only_app(args.stack_only) if args.stack_only is not None
           else create_reference_app(args.model, args.threads))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
