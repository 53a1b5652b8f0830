"""A long Whisper decode loop for the attention kernels under the sanitizers (not a pytest module).

Whisper's shapes are the attention kernels' hardest everyday ones: cross-attention of 1 to 448 decoder queries
over 1500 encoder keys, self-attention over a KV cache that grows to 448 places, beams that reorder it, and the
temperature fallback decoding the same 30 s window again and again. This script writes a randomly initialised
checkpoint of Whisper's geometry (80 mel bins, 1500 encoder positions, 448 decoder positions; narrow layers, a
head dim of 96, outside the vector widths' multiples of 64) with transformers, then, in the process given
``--run``, decodes long-form audio window after window with every strategy until the time is up:

    python tests/fuzz/attention_whisper_loop.py --make /tmp/whisper-loop           # transformers writes it
    tools/sanitize.sh ... or: LD_PRELOAD=... python tests/fuzz/attention_whisper_loop.py --run /tmp/whisper-loop \
        --minutes 20

Random weights repeat tokens, so windows run to their 448-position limit and the compression-ratio threshold
sends them through every temperature: the endless re-decoding a reviewer once saw crash, bounded by the clock.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np


def make(path: Path) -> None:
    import torch
    import transformers
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(
        vocab_size=51865, num_mel_bins=80, d_model=192, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=256, decoder_ffn_dim=256,
        max_source_positions=1500, max_target_positions=448, dropout=0.0)
    hf = transformers.WhisperForConditionalGeneration(cfg).eval()
    g = hf.generation_config
    g.lang_to_id = {"<|en|>": 50259, "<|fr|>": 50265}
    g.task_to_id = {"translate": 50358, "transcribe": 50359}
    g.no_timestamps_token_id = 50363
    g.prev_sot_token_id = 50361
    g.decoder_start_token_id = 50258
    g.max_initial_timestamp_index = 50
    g.is_multilingual = True
    hf.save_pretrained(path)
    settings = json.loads((path / "generation_config.json").read_text())
    settings.pop("_from_model_config", None)
    (path / "generation_config.json").write_text(json.dumps(settings))


SETTINGS = [  # every decode strategy generate has, in turn; long-form (timestamps) and one window without them
    dict(temperature=(0.0, 0.4, 1.0), compression_ratio_threshold=1.35, logprob_threshold=-1.0),
    dict(return_timestamps=False, temperature=(0.0, 0.5, 1.0), compression_ratio_threshold=1.35),
    dict(num_beams=2, temperature=(0.0, 0.5, 1.0), compression_ratio_threshold=1.35, logprob_threshold=-1.0),
    dict(return_timestamps=False, num_beams=3),
    dict(temperature=(0.0, 0.4, 1.0), compression_ratio_threshold=1.35, condition_on_prev_tokens=True),
    dict(return_timestamps=False, do_sample=True, temperature=1.0),
    dict(num_beams=3, condition_on_prev_tokens=True),
]


def run(path: Path, minutes: float, seconds_of_audio: float, start: int = 0) -> int:
    import forgegrad as fg
    from forgegrad.models import from_pretrained
    model = from_pretrained(path)
    rng = np.random.default_rng(0)
    frames = int(seconds_of_audio * 100)
    end = time.time() + 60 * minutes
    windows = tokens = calls = 0
    for i in itertools.count(start):
        if time.time() > end:
            break
        kw = dict(SETTINGS[i % len(SETTINGS)])
        long_form = kw.setdefault("return_timestamps", True)
        batch = 1 + i % 2
        n = frames if long_form else 3000  # without timestamps: one window, decoded to its last position
        x = rng.standard_normal((batch, 80, n)).astype(np.float32)
        mask = np.ones((batch, n), np.int64)
        if batch > 1 and long_form:  # rows of different lengths
            mask[1, n // 2 + int(rng.integers(0, n // 4)):] = 0
        fg.manual_seed(i)
        start = time.time()
        room = 440 - (i % 3) * 100
        if kw.get("condition_on_prev_tokens"):  # the previous text takes up to half the positions
            room = min(room, 448 // 2 - 8)
        out = model.generate(x, attention_mask=mask if long_form else None, language="en", return_segments=long_form,
                             max_new_tokens=room, **kw)
        rows = out["sequences"] if long_form else out
        calls += 1
        windows += sum(len(s) for s in out["segments"]) if long_form else batch
        tokens += int(rows.size)
        print(f"call {calls}: {kw} batch {batch}: {rows.shape[1]} tokens, {time.time() - start:.1f} s", flush=True)
    print(f"whisper loop: {calls} generate calls, {windows} windows or segments, {tokens} tokens in {minutes} min",
          flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--make", type=Path)
    p.add_argument("--run", type=Path)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--audio-seconds", type=float, default=45.0)
    p.add_argument("--start", type=int, default=0, help="the first of SETTINGS to run (they then cycle)")
    a = p.parse_args()
    if a.make:
        make(a.make)
    if a.run:
        return run(a.run, a.minutes, a.audio_seconds, a.start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
