"""``forgegrad generate CHECKPOINT --prompt TEXT --image FILE`` with an image-text model (Gemma 3 with images, byte
tokens) written by transformers: the prompt's image tokens as transformers' Gemma3Processor places them, the pixel
values from the checkpoint's preprocessor_config.json, and the greedy continuation equal to transformers' generate on
the same prompt with transformers' own image processor; image_prompt's layouts for LLaVA and PaliGemma; errors."""
import numpy as np
import pytest

from forgegrad.cli import main
from forgegrad.models import from_pretrained
from forgegrad.models.hf.image_prompts import image_prompt
from forgegrad.models.hf.tokenizer import ByteTokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL.Image")
transformers.logging.set_verbosity_error()

from hf_conformance import BYTE_IMAGE_TOKENS  # noqa: E402

IMG, BOI, EOI, _ = BYTE_IMAGE_TOKENS  # past the byte tokens


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from hf_conformance import tiny_byte_gemma3_vlm
    path = tmp_path_factory.mktemp("gemma3_cli")
    hf, processor = tiny_byte_gemma3_vlm(path, max_positions=256, window=8)
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    PIL.fromarray(image).save(path / "picture.png")
    return path, hf, processor


def _transformers_text(hf, processor, path, ids, kinds, max_new_tokens=6, **kwargs) -> str:
    """transformers' greedy continuation of ``ids`` with the checkpoint's picture, as byte text up to the end
    (``kwargs``: the image processor's, per call, and generate's other settings)."""
    pixels = processor(PIL.open(path / "picture.png").convert("RGB"), return_tensors="pt", **{
        k: kwargs.pop(k) for k in list(kwargs) if "pan_and_scan" in k})["pixel_values"]
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor([ids]), pixel_values=pixels, token_type_ids=torch.tensor([kinds]),
                          max_new_tokens=max_new_tokens, do_sample=False, **kwargs).numpy()[0, len(ids):]
    return _byte_text(out)


def _byte_text(tokens) -> str:
    """New tokens as byte text up to the end token (299)."""
    new = [int(t) for t in tokens]
    return ByteTokenizer().decode(new[:new.index(299)] if 299 in new else new)


def test_generate_with_an_image_equals_transformers(checkpoint, capsys):
    path, hf, processor = checkpoint
    prompt = "Look: <start_of_image> what is it?"
    assert main(["generate", str(path), "--prompt", prompt, "--image", str(path / "picture.png"),
                 "--max-new-tokens", "6"]) == 0
    got = capsys.readouterr().out
    ids, kinds = image_prompt(from_pretrained(path), ByteTokenizer(), prompt, 1)
    want_ids = (list(b"Look: \n\n") + [BOI] + [IMG] * 4 + [EOI] + list(b"\n\n what is it?"))
    assert ids == want_ids and kinds == [int(t == IMG) for t in want_ids]
    assert got == prompt + _transformers_text(hf, processor, path, ids, kinds) + "\n"


def test_generate_uses_the_checkpoints_pan_and_scan_setting(checkpoint, tmp_path, capsys):
    """A preprocessor_config.json with do_pan_and_scan: the 40 x 30 picture (ratio 1.33 >= 1.2) goes in as itself
    and two crops of 20 rows, the prompt as transformers' Gemma3Processor expands crops; the continuation equals
    transformers' generate with its image processor's crops (passed per call: its Gemma3Processor overrides the
    config's pan-and-scan keys with its own defaults)."""
    from hf_conformance import PAN_AND_SCAN as settings, with_pan_and_scan
    path, hf, processor = checkpoint
    pas = with_pan_and_scan(path, tmp_path / "pas")
    prompt = "Look: <start_of_image>"
    assert main(["generate", str(pas), "--prompt", prompt, "--image", str(path / "picture.png"),
                 "--max-new-tokens", "8", "--repetition-penalty", "2"]) == 0
    got = capsys.readouterr().out
    picture = PIL.open(path / "picture.png").convert("RGB")
    want = processor(picture, do_pan_and_scan=True, return_tensors="np", **settings)
    assert want["num_crops"].tolist() == [2] and want["pixel_values"].shape == (3, 3, 28, 28)
    block = [BOI] + [IMG] * 4 + [EOI]
    ids = (list(b"Look: Here is the original image \n\n") + block + list(
        b"\n\n and here are some crops to help you see better \n\n") + block + list(b"\n\n \n\n") + block
        + list(b"\n\n"))
    kinds = [int(t == IMG) for t in ids]
    assert image_prompt(from_pretrained(pas), ByteTokenizer(), prompt, 1, num_crops=[2]) == (ids, kinds)
    answer = _transformers_text(hf, processor, path, ids, kinds, 8, repetition_penalty=2.0, do_pan_and_scan=True,
                                **settings)
    assert got == prompt + answer + "\n"
    plain_ids, plain_kinds = image_prompt(from_pretrained(path), ByteTokenizer(), prompt, 1)
    assert answer != _transformers_text(hf, processor, path, plain_ids, plain_kinds, 8, repetition_penalty=2.0)


def test_chat_with_an_image_places_it_by_the_template(checkpoint, tmp_path, capsys):
    """--chat --image: the user message's content is [image, text] parts, which the template marks; the mark is
    expanded and the continuation equals transformers'."""
    import shutil
    from forgegrad.models.hf.chat_template import load_chat_template
    path, hf, processor = checkpoint
    chat = tmp_path / "chat"
    shutil.copytree(path, chat)
    (chat / "chat_template.jinja").write_text(
        "{% for m in messages %}<turn>{% for p in m['content'] %}{% if p['type'] == 'image' %}<start_of_image>"
        "{% else %}{{ p['text'] }}{% endif %}{% endfor %}<end>{% endfor %}<turn>model ")
    assert main(["generate", str(chat), "--chat", "--prompt", "what is it?", "--image", str(path / "picture.png"),
                 "--max-new-tokens", "6"]) == 0
    got = capsys.readouterr().out
    rendered = load_chat_template(chat).render(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}],
        add_generation_prompt=True)
    assert rendered == "<turn><start_of_image>what is it?<end><turn>model "
    ids, kinds = image_prompt(from_pretrained(chat), ByteTokenizer(), rendered, 1)
    assert got == rendered + _transformers_text(hf, processor, path, ids, kinds) + "\n"


def test_image_prompt_layouts_and_errors(checkpoint, tmp_path, capsys):
    path, _, _ = checkpoint
    model, tok = from_pretrained(path), ByteTokenizer()
    ids, _ = image_prompt(model, tok, "hi", 2)  # no mark: the images first, a space between them
    block = [BOI] + [IMG] * 4 + [EOI]
    assert ids == list(b"\n\n") + block + list(b"\n\n \n\n") + block + list(b"\n\n hi")
    with pytest.raises(ValueError, match="marks 2 images \\(<start_of_image>\\) but 1 were given"):
        image_prompt(model, tok, "<start_of_image><start_of_image>", 1)
    llava = transformers.LlavaConfig(text_config=dict(model_type="llama", num_hidden_layers=1, hidden_size=16,
                                                      num_attention_heads=2, intermediate_size=16, vocab_size=300),
                                     vision_config=dict(hidden_size=16, intermediate_size=16, num_hidden_layers=2,
                                                        num_attention_heads=2, image_size=14, patch_size=7),
                                     image_token_index=IMG)
    transformers.LlavaForConditionalGeneration(llava).save_pretrained(tmp_path / "llava")
    ids, kinds = image_prompt(from_pretrained(tmp_path / "llava"), tok, "A <image>B", 1)
    assert ids == list(b"A ") + [IMG] * 4 + list(b"B") and kinds is None
    pali = transformers.PaliGemmaConfig(text_config=dict(model_type="gemma2", num_hidden_layers=1, hidden_size=16,
                                                         num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                                         intermediate_size=16, vocab_size=300, bos_token_id=2),
                                        vision_config=dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                                                           num_attention_heads=2, image_size=14, patch_size=7),
                                        image_token_index=IMG, projection_dim=16)
    transformers.PaliGemmaForConditionalGeneration(pali).save_pretrained(tmp_path / "pali")
    ids, kinds = image_prompt(from_pretrained(tmp_path / "pali"), tok, "cap en", 1)
    assert ids == [IMG] * 4 + [2] + list(b"cap en\n") and kinds == [0] * len(ids)  # the prefix, all of it
    args = ["generate", str(path), "--prompt", "x", "--max-new-tokens", "2"]
    assert main(args + ["--image", str(tmp_path / "missing.png")]) == 2
    assert "not an image Pillow reads" in capsys.readouterr().err


def test_generate_with_an_image_and_beams_equals_transformers(checkpoint, capsys):
    """--num-beams with --image, one sequence and two: transformers' beam search on the same prompt and picture."""
    path, hf, processor = checkpoint
    prompt = "Look: <start_of_image> what is it?"
    ids, kinds = image_prompt(from_pretrained(path), ByteTokenizer(), prompt, 1)
    args = ["generate", str(path), "--prompt", prompt, "--image", str(path / "picture.png"), "--max-new-tokens", "6",
            "--num-beams", "3"]
    assert main(args) == 0
    assert capsys.readouterr().out == prompt + _transformers_text(hf, processor, path, ids, kinds, num_beams=3) + "\n"
    assert main(args + ["--num-return-sequences", "2"]) == 0
    pixels = processor(PIL.open(path / "picture.png").convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        rows = hf.generate(input_ids=torch.tensor([ids]), pixel_values=pixels, token_type_ids=torch.tensor([kinds]),
                           max_new_tokens=6, do_sample=False, num_beams=3, num_return_sequences=2).numpy()
    want = "".join(f"=== GENERATED SEQUENCE {i + 1} ===\n{prompt}{_byte_text(row[len(ids):])}\n"
                   for i, row in enumerate(rows))
    assert capsys.readouterr().out == want


def test_image_prompt_refuses_a_text_model_and_a_bad_count(checkpoint):
    from forgegrad.models.hf import Gemma3ForCausalLM
    path, _, _ = checkpoint
    text_model = Gemma3ForCausalLM(dict(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, head_dim=8,
                                        num_key_value_heads=1, intermediate_size=16, vocab_size=300))
    with pytest.raises(TypeError, match="Gemma3ForCausalLM takes no images"):
        image_prompt(text_model, ByteTokenizer(), "x", 1)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="n_images must be a non-negative int"):
            image_prompt(from_pretrained(path), ByteTokenizer(), "x", bad)
