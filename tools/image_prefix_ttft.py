"""Time to first token of a chat's second turn about one image, with and without the prefix cache.

A LLaVA 1.5-shaped checkpoint (`forgegrad bench image-text`'s sizes: a 12-layer ViT-B/16 tower at 224 px, 196 image
tokens, a 4-layer 1024-wide decoder, 8,000 byte-level ids; random weights transformers writes) behind
``forgegrad serve``'s streaming /v1/chat/completions (uvicorn on loopback, httpx). Each round: a first turn (a new
picture and a question), then its second turn re-sending the conversation with the picture and the first answer. The
second turn's time to its first streamed token is timed: with the prefix cache it reads the first turn's blocks (past
the image) and prefills the rest as text, without the vision tower; without it (``prefix_cache_mb`` 0) it runs the
tower and the whole prompt again. One request at a time.

    python tools/image_prefix_ttft.py [--threads 1] [--rounds 3]

Needs torch, transformers and the serve extra."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}"
            "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}"
            "{% endif %}{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")


def checkpoint(path: str) -> str:
    """The LLaVA-shaped checkpoint at ``path`` (written once): byte tokens, image token 7999, a CLIP processor."""
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    import torch
    import transformers

    from forgegrad.bench.image_text import _sizes
    text, vision, _, _, _, _ = _sizes(False)
    torch.manual_seed(0)
    cfg = transformers.LlavaConfig(text_config=dict(text, model_type="llama", eos_token_id=257),
                                   vision_config=dict(vision, model_type="clip_vision_model"),
                                   image_token_index=text["vocab_size"] - 1)
    transformers.LlavaForConditionalGeneration(cfg).eval().save_pretrained(path)
    size = vision["image_size"]
    transformers.CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}
                                    ).save_pretrained(path)
    with open(os.path.join(path, "chat_template.jinja"), "w") as f:
        f.write(TEMPLATE)
    return path


def ask(client, messages) -> tuple:
    """(seconds to the first streamed token, the answer, cached prompt tokens) of one streamed chat request."""
    body = {"messages": messages, "max_tokens": 16, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0, first, text, cached = time.perf_counter(), None, "", None
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            for choice in chunk["choices"]:
                first = time.perf_counter() - t0 if first is None else first
                text += choice["delta"].get("content") or ""
            if chunk.get("usage"):
                cached = chunk["usage"]["prompt_tokens_details"]["cached_tokens"]
    return first, text, cached


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/fg-llava-shape", help="where the checkpoint is written once")
    args = ap.parse_args()
    import httpx

    import forgegrad as fg
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    from serve_helpers import png_image, running_app
    path = checkpoint(args.dir)
    fg.set_num_threads(args.threads)
    question = "Describe this picture: what is in it, which colours, and what is happening? " * 2
    print(f"LLaVA 1.5 shape (196 image tokens), {args.threads} thread(s): a second turn re-sending its image")
    print(f"{'prefix cache':>13} {'first turn s (median)':>22} {'second turn s (median)':>23} {'cached tokens':>14}")
    for mb in (0, 1024):
        app = create_completions_app(GenerationServeConfig(path, threads=args.threads, prefix_cache_mb=mb))
        firsts, seconds, cached = [], [], None
        with running_app(app) as url, httpx.Client(base_url=url, timeout=600) as c:
            for r in range(args.rounds + 1):  # round 0: warm-up
                _, picture = png_image(100 + r, (240, 320))
                turn = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": picture}},
                                                     {"type": "text", "text": question}]}]
                t1, answer, _ = ask(c, turn)
                t2, _, cached = ask(c, turn + [{"role": "assistant", "content": answer},
                                               {"role": "user", "content": "And what else?"}])
                if r:
                    firsts.append(t1)
                    seconds.append(t2)
        print(f"{'on' if mb else 'off':>13} {statistics.median(firsts):22.3f} {statistics.median(seconds):23.3f} "
              f"{cached:>14}")


if __name__ == "__main__":
    main()
