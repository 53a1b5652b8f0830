"""Whisper at whisper-tiny's shape (random weights), forgegrad against transformers, one thread each: the rows of
`forgegrad bench hf-encoders` (forgegrad.bench.hf_encoders: the encoder on one 30-second window, and generate, language
given, greedy, of --tokens new tokens; the same tokens checked) and, with ``--onnx``, onnxruntime's on the graphs
export_seq2seq writes (the encoder, and generate_onnx_whisper). ``--longform SECONDS``: also long-form generate with
timestamps on that many seconds of features (window after window, --tokens new tokens at most per window), the same
tokens and segment times checked. ``--beams K``: also short-form generate with K beams (a batch of 2, the same tokens
checked). ``--token-timestamps``: also short-form generate with return_token_timestamps (whisper-tiny's alignment
heads), against the same generate without them and against transformers' (the same times checked); with
``--beams K`` too, token timestamps by beam search.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/whisper_speed.py --tokens 32 --onnx
"""
import argparse
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
    ap.add_argument("--token-timestamps", action="store_true", help="also time generate with token timestamps")
    args = ap.parse_args()
    import forgegrad as fg
    from forgegrad.bench import format_table
    from forgegrad.bench.hf_encoders import whisper_pair, whisper_rows
    print(format_table(whisper_rows([1], quick=False, repeat=args.repeat, tokens=args.tokens, onnx=args.onnx)))
    if args.longform or args.beams or args.token_timestamps:
        import torch
        torch.set_num_threads(1)
        fg.set_num_threads(1)
        with tempfile.TemporaryDirectory() as tmp:
            model, hf = whisper_pair(tmp)
        if args.longform:
            longform(model, hf, args)
        if args.beams:
            beams(model, hf, args)
        if args.token_timestamps:
            token_timestamps(model, hf, args)


def longform(model, hf, args):
    """Long-form generate with timestamps (language given, greedy) on args.longform seconds of features."""
    import torch
    from forgegrad.bench.hf_encoders import whisper_features
    x = whisper_features(1, args.longform, seed=1)
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
    from forgegrad.bench.hf_encoders import whisper_features
    x = whisper_features(2, seed=2)
    kw = dict(language="en", max_new_tokens=args.tokens, num_beams=args.beams)
    ours = model.generate(x, **kw)
    with torch.no_grad():
        theirs = hf.generate(torch.tensor(x), **kw).numpy()
        gen_hf = best(lambda: hf.generate(torch.tensor(x), **kw), args.repeat)
    gen_fg = best(lambda: model.generate(x, **kw), args.repeat)
    print(f"beam search, {args.beams} beams, batch of 2 ({ours.shape[1]} tokens): same tokens: "
          f"{np.array_equal(ours, theirs)}; forgegrad {gen_fg:.0f} ms, transformers {gen_hf:.0f} ms "
          f"({gen_hf / gen_fg:.2f}x)")


def token_timestamps(model, hf, args):
    """Short-form generate (language given, greedy) with token timestamps from openai/whisper-tiny's alignment heads,
    on a batch of two windows whose audio ends at 20 and 30 seconds (the attention mask's frames)."""
    import torch
    from forgegrad.bench.hf_encoders import whisper_features
    heads = [[2, 2], [3, 0], [3, 2], [3, 3], [3, 4], [3, 5]]  # openai/whisper-tiny's generation_config.json
    model.generation_config = dict(model.generation_config, alignment_heads=heads)
    hf.generation_config.alignment_heads = heads
    x = whisper_features(2, seed=3)
    mask = (np.arange(3000)[None] < np.array([[2000], [3000]])).astype(np.int64)
    kw = dict(language="en", max_new_tokens=args.tokens, num_beams=max(args.beams, 1))
    ours = model.generate(x, return_token_timestamps=True, attention_mask=mask, **kw)
    with torch.no_grad():
        theirs = hf.generate(torch.tensor(x), return_token_timestamps=True, attention_mask=torch.tensor(mask), **kw)
        gen_hf = best(lambda: hf.generate(torch.tensor(x), return_token_timestamps=True,
                                          attention_mask=torch.tensor(mask), **kw), args.repeat)
    same = np.array_equal(ours["sequences"], theirs["sequences"].numpy()) and \
        np.allclose(ours["token_timestamps"], theirs["token_timestamps"].numpy(), rtol=0, atol=1e-6)
    plain = best(lambda: model.generate(x, **kw), args.repeat)
    gen_fg = best(lambda: model.generate(x, return_token_timestamps=True, attention_mask=mask, **kw), args.repeat)
    print(f"token timestamps, {kw['num_beams']} beam(s), batch of 2 ({ours['sequences'].shape[1]} tokens): same "
          f"tokens and times: {same}; "
          f"forgegrad {gen_fg:.0f} ms ({plain:.0f} ms without them), transformers {gen_hf:.0f} ms "
          f"({gen_hf / gen_fg:.2f}x)")


if __name__ == "__main__":
    main()
