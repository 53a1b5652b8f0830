"""Whisper at whisper-tiny's shape (random weights), forgegrad against transformers, one thread each: the encoder on
one 30-second window, and generate (language given, greedy) of --tokens new tokens. ``--onnx``: also the graphs
export_seq2seq writes, in onnxruntime (intra_op_num_threads=1): the encoder, and generate_onnx_whisper.
``--longform SECONDS``: also long-form generate with timestamps on that many seconds of features (window after
window, --tokens new tokens at most per window), the same tokens and segment times checked. ``--beams K``: also
short-form generate with K beams (a batch of 2, the same tokens checked).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/whisper_speed.py --tokens 32 --onnx
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))


def best(f, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--onnx", action="store_true", help="also time the exported graphs in onnxruntime")
    ap.add_argument("--longform", type=float, default=0.0, help="also time long-form generate on SECONDS of audio")
    ap.add_argument("--beams", type=int, default=0, help="also time short-form generate with this many beams")
    args = ap.parse_args()
    import torch
    import transformers
    import forgegrad as fg
    from forgegrad.models import from_pretrained
    torch.set_num_threads(1)
    fg.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(vocab_size=51865, num_mel_bins=80, d_model=384, encoder_layers=4, decoder_layers=4,
                                     encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536,
                                     decoder_ffn_dim=1536, suppress_tokens=[], begin_suppress_tokens=[220, 50257])
    hf = transformers.WhisperForConditionalGeneration(cfg).eval()
    g = hf.generation_config
    g.lang_to_id, g.task_to_id = {"<|en|>": 50259}, {"translate": 50358, "transcribe": 50359}
    g.no_timestamps_token_id, g.is_multilingual = 50363, True
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        file = os.path.join(tmp, "generation_config.json")
        settings = json.load(open(file))
        settings.pop("_from_model_config", None)
        json.dump(settings, open(file, "w"))
        model = from_pretrained(tmp)
        hf = transformers.WhisperForConditionalGeneration.from_pretrained(tmp).eval()
        if args.onnx:
            sessions = onnx_sessions(model, tmp)
    x = np.random.default_rng(0).standard_normal((1, 80, 3000)).astype(np.float32)
    tx = torch.tensor(x)
    kw = dict(language="en", max_new_tokens=args.tokens)
    ours = model.generate(x, **kw)
    with torch.no_grad():
        theirs = hf.generate(tx, **kw).numpy()
    same = ours.shape == theirs.shape and (ours == theirs).all()
    with fg.no_grad():
        enc_fg = best(lambda: model.encode(x), args.repeat)
    with torch.no_grad():
        enc_hf = best(lambda: hf.model.encoder(tx), args.repeat)
        gen_hf = best(lambda: hf.generate(tx, **kw), args.repeat)
    gen_fg = best(lambda: model.generate(x, **kw), args.repeat)
    print(f"same tokens: {same} ({ours.shape[1]} new tokens)")
    print(f"encoder, one 30 s window: forgegrad {enc_fg:.1f} ms, transformers {enc_hf:.1f} ms ({enc_hf / enc_fg:.2f}x)")
    print(f"generate (encoder + {ours.shape[1]} tokens): forgegrad {gen_fg:.1f} ms, transformers {gen_hf:.1f} ms "
          f"({gen_hf / gen_fg:.2f}x)")
    if args.longform:
        longform(model, hf, args)
    if args.beams:
        beams(model, hf, args)
    if args.onnx:
        from forgegrad.models.hf import generate_onnx_whisper
        enc, dec = sessions
        same = np.array_equal(generate_onnx_whisper(enc, dec, x, **kw), ours)
        enc_ort = best(lambda: enc.run(None, {"input_features": x}), args.repeat)
        gen_ort = best(lambda: generate_onnx_whisper(enc, dec, x, **kw), args.repeat)
        print(f"onnxruntime, 1 thread: same tokens: {same}; encoder {enc_ort:.1f} ms ({enc_ort / enc_fg:.2f}x "
              f"forgegrad's time); generate_onnx_whisper {gen_ort:.1f} ms ({gen_ort / gen_fg:.2f}x forgegrad's)")


def longform(model, hf, args):
    """Long-form generate with timestamps (language given, greedy) on args.longform seconds of features."""
    import torch
    x = np.random.default_rng(1).standard_normal((1, 80, int(args.longform * 100))).astype(np.float32)
    kw = dict(language="en", max_new_tokens=args.tokens, return_timestamps=True, return_segments=True)
    ours = model.generate(x, **kw)
    with torch.no_grad():
        theirs = hf.generate(torch.tensor(x), **kw)
    same = np.array_equal(ours["sequences"], theirs["sequences"].numpy()) and \
        [(s["start"], s["end"]) for s in ours["segments"][0]] == \
        [(float(s["start"]), float(s["end"])) for s in theirs["segments"][0]]
    with torch.no_grad():
        gen_hf = best(lambda: hf.generate(torch.tensor(x), **kw), args.repeat)
    gen_fg = best(lambda: model.generate(x, **kw), args.repeat)
    windows = len({s["result"].data_ptr() for s in theirs["segments"][0]})  # a window's segments share its row
    print(f"long-form, {args.longform:g} s ({windows} windows, {ours['sequences'].shape[1]} tokens): same tokens and "
          f"segments: {same}; forgegrad {gen_fg:.0f} ms, transformers {gen_hf:.0f} ms ({gen_hf / gen_fg:.2f}x)")


def beams(model, hf, args):
    """Short-form generate with args.beams beams (language given) on a batch of two windows."""
    import torch
    x = np.random.default_rng(2).standard_normal((2, 80, 3000)).astype(np.float32)
    kw = dict(language="en", max_new_tokens=args.tokens, num_beams=args.beams)
    ours = model.generate(x, **kw)
    with torch.no_grad():
        theirs = hf.generate(torch.tensor(x), **kw).numpy()
        gen_hf = best(lambda: hf.generate(torch.tensor(x), **kw), args.repeat)
    gen_fg = best(lambda: model.generate(x, **kw), args.repeat)
    print(f"beam search, {args.beams} beams, batch of 2 ({ours.shape[1]} tokens): same tokens: "
          f"{np.array_equal(ours, theirs)}; forgegrad {gen_fg:.0f} ms, transformers {gen_hf:.0f} ms "
          f"({gen_hf / gen_fg:.2f}x)")


def onnx_sessions(model, directory):
    """export_seq2seq's encoder and decoder graphs (verified) as onnxruntime sessions on one thread."""
    import onnxruntime as ort
    from forgegrad.models.hf import export_seq2seq
    out = os.path.join(directory, "onnx")
    export_seq2seq(model, out)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    return tuple(ort.InferenceSession(os.path.join(out, f), opts, providers=["CPUExecutionProvider"])
                 for f in ("encoder.onnx", "decoder.onnx"))


if __name__ == "__main__":
    main()
