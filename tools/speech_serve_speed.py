"""The audio API's throughput: a Whisper at whisper-tiny's shape (random weights, max_target_positions 36: every
request decodes 32 tokens) served on one thread, --requests concurrent WAV uploads (5 s, 44.1 kHz stereo 16-bit)
with --max-batch 8 against 1 (one request at a time), and one request alone. Same texts checked.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/speech_serve_speed.py --requests 8
"""
import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time
import wave

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def whisper_tiny_dir(path):
    import torch
    import transformers
    from tokenizers import Tokenizer, models
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(vocab_size=51865, num_mel_bins=80, d_model=384, encoder_layers=4, decoder_layers=4,
                                     encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536,
                                     decoder_ffn_dim=1536, max_target_positions=36, suppress_tokens=[],
                                     begin_suppress_tokens=[220, 50257])
    hf = transformers.WhisperForConditionalGeneration(cfg).eval()
    g = hf.generation_config
    g.lang_to_id, g.task_to_id = {"<|en|>": 50259}, {"translate": 50358, "transcribe": 50359}
    g.no_timestamps_token_id, g.is_multilingual = 50363, True
    hf.save_pretrained(path)
    transformers.WhisperFeatureExtractor().save_pretrained(path)
    file = os.path.join(path, "generation_config.json")
    settings = json.load(open(file))
    settings.pop("_from_model_config", None)
    json.dump(settings, open(file, "w"))
    vocab = {f"w{i}": i for i in range(51865)}
    Tokenizer(models.WordLevel(vocab, unk_token="w0")).save(os.path.join(path, "tokenizer.json"))


def wav(seconds=5.0, rate=44100, seed=0):
    x = (np.random.default_rng(seed).standard_normal((int(rate * seconds), 2)) * 3000).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8)
    args = ap.parse_args()
    import httpx
    from serve_helpers import running_app

    from forgegrad.serve.speech_app import SpeechServeConfig, create_speech_app
    files = [wav(seed=i) for i in range(args.requests)]

    async def burst(url):
        async with httpx.AsyncClient(base_url=url, timeout=600) as c:
            rs = await asyncio.gather(*(c.post("/v1/audio/transcriptions", files={"file": ("a.wav", f)},
                                               data={"language": "en"}) for f in files))
        assert all(r.status_code == 200 for r in rs), [r.text for r in rs if r.status_code != 200]
        return [r.json()["text"] for r in rs]

    with tempfile.TemporaryDirectory() as tmp:
        whisper_tiny_dir(tmp)
        texts = {}
        for max_batch in (8, 1):
            app = create_speech_app(SpeechServeConfig(tmp, threads=1, max_batch=max_batch))
            with running_app(app) as url:
                asyncio.run(burst(url))  # warm up
                t0 = time.perf_counter()
                alone = httpx.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", files[0])},
                                   data={"language": "en"}, timeout=600)
                t1 = time.perf_counter()
                texts[max_batch] = asyncio.run(burst(url))
                t2 = time.perf_counter()
            assert alone.status_code == 200, alone.text
            print(f"--max-batch {max_batch}: one request alone {(t1 - t0) * 1e3:.0f} ms; {args.requests} at once "
                  f"{(t2 - t1) * 1e3:.0f} ms ({args.requests / (t2 - t1):.2f} requests/s)")
        print("same texts:", texts[8] == texts[1])


if __name__ == "__main__":
    main()
