"""Helpers for the forgegrad serve tests: a model repository on disk, the real server (uvicorn) on a
free loopback port in a thread, and each model's direct output to compare the server's answers with."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np

import forgegrad as fg
from forgegrad import models
from forgegrad.cli import _checkpoint

# name -> (zoo kwargs, checkpoint metadata)
SPECS = {
    "mlp": ({"in_features": 64, "out_features": 10},
            {"task": "classify", "input_kind": "flat", "input_shape": [64], "num_classes": 10}),
    "lenet8": ({}, {"task": "classify", "input_kind": "image", "input_shape": [1, 8, 8], "num_classes": 10}),
    "char_lstm": ({"vocab_size": 12, "embed_dim": 8, "hidden_size": 16},
                  {"task": "lm", "input_kind": "tokens", "input_shape": [6], "num_classes": 12}),
    "vae": ({"input_dim": 64}, {"task": "vae", "input_kind": "flat", "input_shape": [64]}),
}


def write_checkpoint(name, version_dir, seed=0):
    """A zoo model with seeded random weights saved as `forgegrad train` saves it; returns the model."""
    kwargs, meta = SPECS[name]
    fg.manual_seed(seed)
    model = models.create(name, **kwargs)
    _checkpoint.save(model, dict(meta), version_dir)
    return _checkpoint.load(version_dir)[0]


def write_onnx(version_dir, seed=0):
    """An MLP exported to ONNX (forgegrad's exporter, verified in onnxruntime); returns its path."""
    from forgegrad import onnx as fg_onnx
    fg.manual_seed(seed)
    model = models.create("mlp", **SPECS["mlp"][0]).eval()
    os.makedirs(version_dir, exist_ok=True)
    path = os.path.join(version_dir, "model.onnx")
    fg_onnx.export(model, (fg.tensor(np.zeros((2, 64), np.float32)),), path)
    return path


def example(name, n, seed=1):
    rng = np.random.default_rng(seed)
    if name == "char_lstm":
        return rng.integers(0, SPECS[name][0]["vocab_size"], size=(n, 6)).astype(np.int64)
    if name == "lenet8":
        return rng.random((n, 1, 8, 8), dtype=np.float32)
    return rng.random((n, 64), dtype=np.float32)


def direct(model, x):
    """The model's own output for x (VAEs: the deterministic reconstruction, as served)."""
    from forgegrad.cli.export import VAEReconstructor
    if hasattr(model, "encode"):
        model = VAEReconstructor(model).eval()
    with fg.no_grad():
        return model(fg.tensor(x)).numpy()


def onnx_direct(path, x):
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def assert_same(got, expected, what=""):
    """Batching may move a float32 result by a rounding step (the GEMM takes another kernel path at
    another batch size), so: equal to float32 rounding, and the same shape."""
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=what)


def free_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


def free_port():
    with contextlib.closing(free_socket()) as s:
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model_path, **config):
    """uvicorn.Server running forgegrad serve's app in a thread on a free loopback port; yields the
    base URL and the app."""
    from forgegrad.serve import ServeConfig, create_app
    app = create_app(ServeConfig(model_path, **config))
    with running_app(app) as url:
        yield url, app


@contextlib.contextmanager
def running_app(app):
    """uvicorn.Server running an ASGI app in a thread on a free loopback port; yields the base URL."""
    import uvicorn
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def metric(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`, from Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, value = line.rsplit(" ", 1)
        sample = head.split("{")[0]
        if sample != name:
            continue
        lab = head[len(sample):]
        if all(f'{k}="{v}"' in lab for k, v in labels.items()):
            total += float(value)
    return total


def start_cli_server(model_path, *options, output="stdout"):
    """``forgegrad serve MODEL_PATH --port PORT OPTIONS`` as a subprocess, waited for until /ping answers
    (60 s at most). Returns (process, base url); the server's output (``output``: "stdout" or "stderr")
    is kept for the failure message, the other stream discarded."""
    import httpx
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    streams = ({"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT} if output == "stdout"
               else {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE})
    proc = subprocess.Popen([sys.executable, "-m", "forgegrad.cli", "serve", str(model_path), "--port", str(port),
                             *options], env=env, **streams)
    url = f"http://127.0.0.1:{port}"
    log = proc.stdout if output == "stdout" else proc.stderr
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/ping", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() >= deadline:
            proc.kill()
            raise AssertionError("server did not come up: " + log.read().decode())
        time.sleep(0.1)


def start_stream(client, body, wait: float = 60):
    """Streams a /v1/completions request on ``client`` (an httpx.Client) in a thread; returns (thread, pieces) once
    its first chunk has arrived (pieces: the chunks' texts, growing while it runs). Join the thread when done."""
    import json
    pieces, started = [], threading.Event()

    def stream():
        with client.stream("POST", "/v1/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    pieces.append(json.loads(line[6:])["choices"][0]["text"])
                    started.set()

    thread = threading.Thread(target=stream)
    thread.start()
    assert started.wait(wait), "the stream sent no chunk"
    return thread, pieces


def post_all(url, bodies, timeout: float = 120, route: str = "/v1/completions"):
    """The responses to ``bodies`` POSTed to ``route`` all at once (concurrent requests), in order."""
    import asyncio

    import httpx

    async def burst():
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as c:
            return await asyncio.gather(*(c.post(route, json=b) for b in bodies))

    return asyncio.run(burst())


def stream_all(url, bodies, timeout: float = 120, route: str = "/v1/completions"):
    """``bodies`` streamed from ``route`` all at once (concurrent requests), in order: for each, its choices'
    chunks (the data events' ``choices`` entries) by choice index, in arrival order."""
    import asyncio
    import json

    import httpx

    async def streams():
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as c:
            async def one(body):
                chunks = {}
                async with c.stream("POST", route, json=dict(body, stream=True)) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):
                            for choice in json.loads(line[6:])["choices"]:
                                chunks.setdefault(choice["index"], []).append(choice)
                return chunks
            return await asyncio.gather(*(one(b) for b in bodies))

    return asyncio.run(streams())


def png_image(seed: int, size=(40, 30)):
    """A random RGB PIL image of (height, width) ``size`` and its PNG as a base64 data: URL (a chat image_url)."""
    import base64
    import io

    from PIL import Image
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return image, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# Qwen2-VL's chat template and vision marks, for the tiny Qwen2-VL checkpoints of the image-serving tests
QWEN_VL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN_VL_MARKS = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]


def qwen_vl_tokenizer():
    """(a byte-level BPE tokenizer with Qwen's chat template and vision marks, the marks' ids (start, pad, end))."""
    from hf_conformance import chat_tokenizer
    tok = chat_tokenizer(QWEN_VL_TEMPLATE)
    tok.add_special_tokens({"additional_special_tokens": QWEN_VL_MARKS})
    return tok, tok.convert_tokens_to_ids(QWEN_VL_MARKS)


def engine_and_solo_results(gen, bodies, model_name, **engine_options):
    """Chat request bodies (with or without images) as jobs of one contiguous BatchEngine (``engine_options``), and
    each request decoded alone (TextGenerator.complete): (the engine's results, the lone ones, the jobs)."""
    import json

    from forgegrad.serve.chat_images import image_inputs
    from forgegrad.serve.chat_request import parse_chat
    from forgegrad.serve.generation_batch import BatchEngine, Job
    jobs, solos = [], []
    for body in bodies:
        req = parse_chat(json.dumps(body).encode(), model_name)
        req.prompts = [gen.chat_prompt(req)]
        ids, images = image_inputs(gen, req, req.prompts[0]) if req.images else (gen.token_ids(req.prompts[0], 0),
                                                                                 None)
        solos.append(gen.complete(req, ids, None, threading.Event(), None, None, images))
        jobs.append(Job(req, [ids], None, threading.Event(), images=images))
    engine = BatchEngine(gen, 4, **engine_options)
    try:
        results = [f.result(timeout=120)[0] for f in [engine.submit(j) for j in jobs]]
    finally:
        engine.close()
    return results, solos, jobs


def assert_same_decodes(results, solos):
    """The same tokens, and log-probabilities equal to float32 rounding."""
    assert [r.token_ids for r in results] == [s.token_ids for s in solos]
    for r, s in zip(results, solos):
        np.testing.assert_allclose([e.logprob for e in r.entries], [e.logprob for e in s.entries], rtol=1e-4,
                                   atol=1e-4)


def tiny_qwen_vl(path, kind: str):
    """(transformers' tiny Qwen2-VL (``kind`` "qwen2_vl") or Qwen2.5-VL ("qwen2_5_vl") written at ``path`` with Qwen's
    chat template, its tokenizer, its image processor): a byte-level BPE with the vision marks, weights drawn wide
    enough that greedy answers vary, Qwen2.5-VL's windows of 2 x 2 merged patches in block 0 and whole images in
    block 1, images of 4 to 64 merged patches."""
    import torch
    import transformers
    tok, (start, pad, end) = qwen_vl_tokenizer()
    torch.manual_seed(0)
    text = dict(num_hidden_layers=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=40, vocab_size=300, max_position_embeddings=256,
                initializer_range=0.2 if kind == "qwen2_vl" else 0.3,
                rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 2, 2]), eos_token_id=1)
    marks = dict(image_token_id=pad, vision_start_token_id=start, vision_end_token_id=end)
    if kind == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=48, num_heads=4, mlp_ratio=2, patch_size=14,
                      initializer_range=0.2)
        hf = transformers.Qwen2VLForConditionalGeneration(
            transformers.Qwen2VLConfig(text_config=text, vision_config=vision, **marks)).eval()
    else:
        vision = dict(depth=2, hidden_size=32, out_hidden_size=48, intermediate_size=40, num_heads=4, patch_size=14,
                      window_size=56, fullatt_block_indexes=[1], initializer_range=0.2)
        hf = transformers.Qwen2_5_VLForConditionalGeneration(
            transformers.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **marks)).eval()
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "chat_template.jinja").write_text(QWEN_VL_TEMPLATE)
    processor = transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)
    processor.save_pretrained(path)
    return hf, tok, processor
