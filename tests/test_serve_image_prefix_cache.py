"""The prefix cache for chat prompts with images on the paged engine (serve/image_prefix.py), on the real server
(uvicorn, httpx) for tiny Gemma 3 (also with pan-and-scan crops), LLaVA, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL and
PaliGemma checkpoints that transformers wrote: a chat's second
turn re-sending the same image reads the first turn's blocks (its ``cached_tokens`` past the image's last token) and
its answer and log-probabilities equal transformers' greedy generate on the whole conversation; the same turn with
another image, and two images of which only the second differs, read nothing and get their own answers; the same
two-image prompt again reads its blocks. PaliGemma's prompts (one prefix attended both ways) read none. At the cache's
level: blocks are shared up to the block of the first image that differs, never past it, and a text prompt with the
same ids shares only the blocks before the first image."""
from __future__ import annotations

import numpy as np
import pytest

from forgegrad.models import from_pretrained
from forgegrad.models.hf.chat_template import load_chat_template
from forgegrad.models.hf.image_prompts import image_prompt
from forgegrad.models.hf.tokenizer import ByteTokenizer

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("jinja2")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")
transformers.logging.set_verbosity_error()

from hf_conformance import BYTE_IMAGE_TOKENS  # noqa: E402
from serve_helpers import QWEN_VL_MARKS as MARKS  # noqa: E402
from serve_helpers import png_image, post_all, running_app, tiny_qwen_vl  # noqa: E402
from test_serve_image_batching import TEMPLATE as GEMMA_TEMPLATE  # noqa: E402
from test_serve_image_batching import _other_checkpoint  # noqa: E402

IMG, BOI, EOI, BYTE_EOS = BYTE_IMAGE_TOKENS
BLOCK = 8  # the pool's (and the prefix cache's) block: small, so that short prompts fill several
QWEN_MARK = "<|vision_start|><|image_pad|><|vision_end|>"


def _qwen2_vl(path, kind):
    """(transformers' tiny Qwen2-VL or Qwen2.5-VL written at ``path``, its image processor, its tokenizer), as the
    Qwen2-VL batching tests build them."""
    hf, tok, processor = tiny_qwen_vl(path, kind)
    return hf, processor, tok


NEXT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}"
                 "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}"
                 "{% endif %}{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
PINPOINTS = [[28, 56], [56, 28], [56, 56]]


def _llava_next(path):
    """(transformers' tiny LLaVA-NeXT written at ``path``, its processor, its tokenizer), as
    test_serve_llava_next_images builds it: each image a base tile and its grid's tiles, its token count by size."""
    from hf_conformance import chat_tokenizer
    tok = chat_tokenizer(NEXT_TEMPLATE)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    torch.manual_seed(0)
    text = dict(model_type="llama", num_hidden_layers=2, hidden_size=48, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=40, vocab_size=len(tok), max_position_embeddings=256,
                initializer_range=0.2, eos_token_id=1)
    vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, image_size=28, patch_size=7)
    hf = transformers.LlavaNextForConditionalGeneration(transformers.LlavaNextConfig(
        text_config=text, vision_config=vision, image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=PINPOINTS)).eval()
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "chat_template.jinja").write_text(NEXT_TEMPLATE)
    improc = transformers.LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                                     image_grid_pinpoints=PINPOINTS)
    improc.save_pretrained(path)
    processor = transformers.LlavaNextProcessor(image_processor=improc, tokenizer=tok, patch_size=7,
                                                vision_feature_select_strategy="default", image_token="<image>",
                                                num_additional_image_tokens=1)
    return hf, processor, tok


class Family:
    """A tiny checkpoint of one family, and transformers' answers to conversations on it."""

    def __init__(self, kind, path):
        from hf_conformance import tiny_byte_gemma3_vlm
        self.kind, self.path, self.tok, self.processor_kwargs = kind, path, None, {}
        if kind.startswith("gemma3"):
            base = path.parent / "base" if kind == "gemma3_pan" else path
            base.mkdir(exist_ok=True)
            self.hf, self.processor = tiny_byte_gemma3_vlm(base)
            (base / "chat_template.jinja").write_text(GEMMA_TEMPLATE)
            if kind == "gemma3_pan":  # each wide picture: its original and its pan-and-scan crops, one block each
                from hf_conformance import PAN_AND_SCAN, with_pan_and_scan
                path.rmdir()
                with_pan_and_scan(base, path)
                self.processor_kwargs = dict(do_pan_and_scan=True, **PAN_AND_SCAN)
        elif kind in ("qwen2_vl", "qwen2_5_vl"):
            self.hf, self.processor, self.tok = _qwen2_vl(path, kind)
        elif kind == "llava_next":
            self.hf, self.processor, self.tok = _llava_next(path)
        else:
            self.hf, self.processor = _other_checkpoint(kind, path)
        self.model = from_pretrained(path)
        self.penalty = 2.0 if kind.startswith("gemma3") else 1.0  # keeps the tiny Gemma 3 from repeating one token
        self.eos = 1 if self.tok is not None else BYTE_EOS

    def prompt(self, turns, images):
        """(the conversation's prompt ids with each image's tokens, transformers' image arguments, where its last
        image token is + 1)."""
        rendered = load_chat_template(self.path).render(_template_messages(turns), add_generation_prompt=True)
        pictures = [im.convert("RGB") for im in images]
        if self.kind == "llava_next":  # transformers' processor expands each <image> by the image's size
            extra = dict(self.processor(text=[rendered], images=pictures, return_tensors="pt"))
            ids = extra.pop("input_ids")[0].tolist()
            extra.pop("attention_mask", None)
            image = self.tok.convert_tokens_to_ids("<image>")
        elif self.tok is not None:  # Qwen2-VL, Qwen2.5-VL
            start, pad, end = self.tok.convert_tokens_to_ids(MARKS)
            extra = dict(self.processor(pictures, return_tensors="pt"))
            counts = (extra["image_grid_thw"].prod(-1) // 4).tolist()
            pieces = rendered.split(QWEN_MARK)
            ids = self.tok.encode(pieces[0])
            for count, piece in zip(counts, pieces[1:]):
                ids += [start] + [pad] * count + [end] + self.tok.encode(piece)
            extra["mm_token_type_ids"] = (torch.tensor([ids]) == pad).long()
            image = pad
        else:
            processed = self.processor(pictures, return_tensors="pt", **self.processor_kwargs)
            crops = processed["num_crops"].tolist() if "num_crops" in processed else None
            ids, kinds = image_prompt(self.model, ByteTokenizer(), rendered, len(images), num_crops=crops)
            extra = dict(pixel_values=processed["pixel_values"])
            if kinds is not None:
                extra["token_type_ids"] = torch.tensor([kinds])
            image = IMG
        return ids, extra, max(i for i, t in enumerate(ids) if t == image) + 1

    def want(self, turns, images, max_tokens):
        """transformers' greedy answer and its tokens' log-softmax values (as the batching tests compare them)."""
        ids, extra, _ = self.prompt(turns, images)
        with torch.no_grad():
            out = self.hf.generate(input_ids=torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                                   repetition_penalty=self.penalty, output_logits=True, return_dict_in_generate=True,
                                   **extra)
        tokens = out.sequences[0, len(ids):].tolist()
        values = [float(torch.log_softmax(step[0].double(), -1)[t]) for step, t in zip(out.logits, tokens)]
        n = tokens.index(self.eos) if self.eos in tokens else len(tokens)
        if self.tok is not None:
            return self.tok.decode(tokens[:n]), values[:n]
        return ByteTokenizer().decode(tokens[:n]), values[:n + (self.eos in tokens)]

    def pictures(self, size=None):
        """Four random pictures (PIL image, data URL); ``size`` None: of four sizes (wide ones for pan-and-scan)."""
        if self.kind == "gemma3_pan" and size is None:
            return [png_image(s, (30, 80 + 4 * s)) for s in range(4)]
        return [png_image(s, size or (30 + 5 * s, 40)) for s in range(4)]

    def body(self, turns, urls, max_tokens):
        return {"messages": _request_messages(turns, urls), "max_tokens": max_tokens, "temperature": 0,
                "repetition_penalty": self.penalty, "logprobs": True}


def _template_messages(turns):
    """turns: (role, [text or None (an image)]) -> the template's messages."""
    return [{"role": role, "content": [{"type": "image"} if p is None else {"type": "text", "text": p}
                                       for p in parts]} for role, parts in turns]


def _request_messages(turns, urls):
    urls = iter(urls)
    return [{"role": role, "content": [{"type": "image_url", "image_url": {"url": next(urls)}} if p is None else
                                       {"type": "text", "text": p} for p in parts]} for role, parts in turns]


FAMILIES = ["gemma3", "gemma3_pan", "llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "paligemma"]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / f"tiny-{request.param}"
    path.mkdir()
    return Family(request.param, path)


def _answer(response):
    """(text, log-probabilities, cached prompt tokens) of a response's first choice."""
    assert response.status_code == 200, response.text
    body = response.json()
    choice = body["choices"][0]
    return (choice["message"]["content"], [e["logprob"] for e in choice["logprobs"]["content"]],
            body["usage"]["prompt_tokens_details"]["cached_tokens"])


def _same(got, want, tol=1e-4):
    assert got[0] == want[0]
    assert len(got[1]) == len(want[1])
    np.testing.assert_allclose(got[1], want[1], rtol=tol, atol=tol)


def test_image_chats_read_the_prefix_cache_only_with_their_own_images(family):
    from forgegrad.serve.completions import GenerationServeConfig, create_completions_app
    pictures = family.pictures()
    first = [("user", [None, "Describe this picture in a few words"])]
    two = [("user", [None, "and then", None, "Compare the two pictures"])]
    # (turns, images by index); each one request, in order, after the one before ended
    cases = [(first, [0])]
    app = create_completions_app(GenerationServeConfig(str(family.path), prefix_block=BLOCK))
    with running_app(app) as url:
        got = [_answer(post_all(url, [family.body(first, [pictures[0][1]], 8)], route="/v1/chat/completions")[0])]
        # the next turn re-sends the conversation with its image; then the same turn with another image
        second = first + [("assistant", [got[0][0]]), ("user", ["And what colours are in it?"])]
        cases += [(second, [0]), (second, [1]), (two, [0, 2]), (two, [0, 3]), (two, [0, 2])]
        for turns, which in cases[1:]:
            got.append(_answer(post_all(url, [family.body(turns, [pictures[i][1] for i in which], 8)],
                                        route="/v1/chat/completions")[0]))
    want = [family.want(turns, [pictures[i][0] for i in which], 8) for turns, which in cases]
    # the other image changes the answer (its values at least): a block shared by mistake would show
    for a, b in ((1, 2), (3, 4)):
        assert want[a][0] != want[b][0] or not np.allclose(want[a][1], want[b][1], atol=1e-3), (want[a], want[b])
    # PaliGemma's tiny decoder (weights drawn with std 1.0) turns float32 rounding into up to 1.7e-3 of a decode
    # step's log-probability on these longer prompts (its prefill's logits equal transformers' to 7e-6); its prompts
    # with images take the path they took before the cache read images (none read)
    tol = 2e-3 if family.kind == "paligemma" else 1e-4
    for g, w in zip(got, want):
        _same(g, w, tol)
    cached = [g[2] for g in got]
    if family.kind == "paligemma":  # one prefix attended both ways: no prompt with images reads cached blocks
        assert cached == [0] * len(cases)
        return
    ends = [family.prompt(turns, [pictures[i][0] for i in which])[2] for turns, which in cases]
    # the second turn reads the first's blocks past its image's last token (the rest is text); the same turn with
    # another image, and the two images with the second changed, read none; the first two-image prompt again reads
    # its own blocks, past both images
    assert cached[0] == 0 and cached[1] >= ends[1] and cached[1] % BLOCK == 0, (cached, ends)
    assert cached[2] == 0 and cached[3] == 0 and cached[4] == 0, cached
    assert cached[5] >= ends[5] and cached[5] % BLOCK == 0, (cached, ends)


def test_blocks_are_shared_up_to_the_first_image_that_differs(family):
    """PagedPrefixCache with ImageKeys' marks: a prompt whose second image differs shares the blocks before the
    block of that image's first token and none after it; one whose first image differs shares those before the
    first image's; the same ids without marks (a text prompt) share only the blocks before the first image; the same
    images share every block."""
    from forgegrad.models.hf.image_prompts import image_inputs
    from forgegrad.serve.completions import TextGenerator
    from forgegrad.serve.image_prefix import ImageKeys, why_no_image_prefix
    from forgegrad.serve.kv_pool import KVPool
    from forgegrad.serve.prefix_cache import PagedPrefixCache
    gen = TextGenerator(str(family.path))  # the server's model, tokenizer and image processor
    if family.kind == "paligemma":  # its prompts with images never use the cache (the server test checks it)
        assert "both ways" in why_no_image_prefix(gen.model)
        return
    assert why_no_image_prefix(gen.model) is None
    pool = KVPool.for_model(gen.model, blocks=64, block_tokens=BLOCK)
    cache = PagedPrefixCache(1 << 30, BLOCK, pool)
    # one size: the same ids whatever the image
    pictures = [p for p, _ in family.pictures((30, 80) if family.kind == "gemma3_pan" else (36, 40))]
    turns = [("user", [None, "and then a long text between the two", None, "Compare the two pictures"])]
    rendered = load_chat_template(family.path).render(_template_messages(turns), add_generation_prompt=True)

    def prompt(which):
        ids, images = image_inputs(gen.model, gen.tokenizer, rendered, [pictures[i] for i in which],
                                   gen.image_processor)
        return ids, ImageKeys(gen.model, ids, images)

    ids, keys = prompt([0, 2])
    assert pool.reserve(len(ids) // BLOCK)
    table = [pool.allocate() for _ in range(len(ids) // BLOCK)]
    cache.store(ids, table, keys.marks(BLOCK))
    per = len(keys.digests) // 2  # digests per picture: 1, or its original and its crops (pan-and-scan)
    assert len(keys.digests) == 2 * per and per == (4 if family.kind == "gemma3_pan" else 1)
    first_at, second_at = keys.digests[0][0], keys.digests[per][0]  # where each picture's first token is
    assert second_at // BLOCK > first_at // BLOCK  # the pictures start in other blocks
    full = (len(ids) - 1) // BLOCK
    same_ids, same = prompt([0, 2])
    assert cache.match(same_ids, same.marks(BLOCK)) == table[:full]
    other_ids, other = prompt([0, 3])
    assert other_ids == ids and other.digests[:per] == keys.digests[:per]
    assert all(a != b for a, b in zip(other.digests[per:], keys.digests[per:]))
    assert cache.match(ids, other.marks(BLOCK)) == table[:second_at // BLOCK]
    first_ids, first = prompt([1, 2])
    assert cache.match(ids, first.marks(BLOCK)) == table[:first_at // BLOCK]
    assert cache.match(ids) == table[:first_at // BLOCK]  # a text prompt of the same ids

