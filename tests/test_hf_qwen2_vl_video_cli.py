"""``forgegrad generate CHECKPOINT --video FILE [--fps N]`` with Qwen2-VL and Qwen2.5-VL checkpoints transformers wrote:
the MP4 (written by PyAV) decoded and its frames sampled as transformers' Qwen2-VL video processor samples them, the
video pad expanded, and the greedy continuation equal to transformers' generate fed the same pixel_values_videos,
video_grid_thw and (Qwen2.5-VL) second_per_grid_ts; an image and a video through the chat template; errors."""
import pytest

av = pytest.importorskip("av", reason="PyAV decodes the video files: pip install 'forgegrad[video]'")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("jinja2")
transformers.logging.set_verbosity_error()

from forgegrad.cli import main  # noqa: E402

from video_helpers import clip, encode, qwen_vl_video_checkpoint, reference_video_inputs  # noqa: E402


@pytest.fixture(scope="module", params=[False, True], ids=["qwen2_vl", "qwen2_5_vl"])
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen_vl_video_cli")
    hf, tok, marks = qwen_vl_video_checkpoint(path, request.param)
    data = encode(clip(0, 13), fps=10)
    (path / "clip.mp4").write_bytes(data)
    return path, hf, tok, marks, request.param, data


def _hf_text(hf, tok, ids, video_kw, marks, image_kw=None, n=6) -> str:
    _, pad, _, video = marks
    ids_t = torch.tensor([ids])
    kinds = torch.where(ids_t == pad, 1, torch.where(ids_t == video, 2, 0))
    with torch.no_grad():
        out = hf.generate(input_ids=ids_t, **video_kw, **(image_kw or {}), mm_token_type_ids=kinds, max_new_tokens=n,
                          do_sample=False)[0, len(ids):].tolist()
    return tok.decode(out[:out.index(1)] if 1 in out else out)  # up to the end token (1), as the CLI writes


@pytest.mark.parametrize("fps", [None, 4.0])
def test_generate_with_a_video_equals_transformers(checkpoint, tmp_path, capsys, fps):
    path, hf, tok, marks, v2_5, data = checkpoint
    start, _, end, video = marks
    prompt = "hello <|vision_start|><|video_pad|><|vision_end|> world"
    args = ["generate", str(path), "--prompt", prompt, "--video", str(path / "clip.mp4"), "--max-new-tokens", "6"]
    assert main(args + (["--fps", str(fps)] if fps else [])) == 0
    got = capsys.readouterr().out
    # fps None: 2 a second (4 frames at least: 0, 3, 6, 9 of 13 at 10 fps, as 4 a second); the file's 13 frames
    kw, n = reference_video_inputs(data, fps or 2.0, v2_5, tmp_path)
    assert n == 8 and ("second_per_grid_ts" in kw) == v2_5
    ids = tok.encode("hello ") + [start] + [video] * n + [end] + tok.encode(" world")
    assert got == prompt + _hf_text(hf, tok, ids, kw, marks) + "\n"


def test_chat_with_an_image_and_two_videos(checkpoint, tmp_path, capsys):
    """--chat: the template writes the image, then the videos, then the text; the second video (3 frames: one group
    padded by its last frame) at --fps 1; no marks in a plain prompt: the image, the videos, then the text."""
    import numpy as np
    from PIL import Image
    path, hf, tok, marks, v2_5, data = checkpoint
    start, pad, end, video = marks
    short = encode(clip(1, 3, (30, 70)), fps=5)
    (tmp_path / "short.mp4").write_bytes(short)
    picture = np.random.default_rng(3).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "p.png")
    media = ["--image", str(tmp_path / "p.png"), "--video", str(path / "clip.mp4"), "--video",
             str(tmp_path / "short.mp4"), "--fps", "1", "--max-new-tokens", "5"]
    kw1, n1 = reference_video_inputs(data, 1.0, v2_5, tmp_path)
    kw2, n2 = reference_video_inputs(short, 1.0, v2_5, tmp_path)
    kw = {k: torch.cat([kw1[k], kw2[k]]) for k in kw1}
    pixels = transformers.Qwen2VLImageProcessorPil.from_pretrained(path)([Image.fromarray(picture)],
                                                                         return_tensors="pt")
    m = int(pixels["image_grid_thw"].prod()) // 4
    body = [start] + [pad] * m + [end, start] + [video] * n1 + [end, start] + [video] * n2 + [end]
    for flags, head, tail in ((["--chat"], "<|im_start|>user\n", "say more<|im_end|>\n<|im_start|>assistant\n"),
                              ([], "", "say more")):
        assert main(["generate", str(path), "--prompt", "say more", *flags, *media]) == 0
        got = capsys.readouterr().out
        ids = tok.encode(head) + body + tok.encode(tail)
        want = _hf_text(hf, tok, ids, kw, marks, pixels, n=5)
        assert want, flags  # text, not an end at once
        assert got.endswith(want + "\n")


def test_video_errors(checkpoint, tmp_path, capsys):
    path = checkpoint[0]
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (tmp_path / "cut.mp4").write_bytes((path / "clip.mp4").read_bytes()[:60])
    cases = [(["--video", str(tmp_path / "x.png")], "a PNG image, not a video container"),
             (["--video", str(tmp_path / "cut.mp4")], "MP4/MOV: FFmpeg could not open"),
             (["--video", str(tmp_path / "missing.mp4")], "No such file"),
             (["--fps", "2"], "--fps needs --video"),
             (["--video", str(path / "clip.mp4"), "--fps", "0"], "must be > 0"),
             (["--video", str(path / "clip.mp4"), "--prompt", "<|video_pad|><|video_pad|>"], "marks 2 videos")]
    for flags, message in cases:
        args = ["generate", str(path), "--prompt", "hi", "--max-new-tokens", "2", *flags]
        try:
            rc = main(args)
        except SystemExit as e:  # argparse's own errors
            rc = e.code
        assert rc != 0
        assert message in capsys.readouterr().err, (flags, message)
