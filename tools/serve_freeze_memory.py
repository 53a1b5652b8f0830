"""Peak memory of a served Hugging Face model, loaded as the servers load it (``serve.openai_routes.served_model``):
as loaded (``--no-freeze``), frozen in place (the servers' default: ``nn.utils.freeze(model, inplace=True)``) and
frozen as a copy (``nn.utils.freeze(model)``, the original then dropped: what serving a frozen model cost before
``inplace``). Each in a fresh process; VmHWM (peak resident set) and VmRSS after loading from /proc/self/status.

    python tools/serve_freeze_memory.py [--model bert-base gpt2 whisper-base]

The checkpoints are written by transformers with random weights at the real models' shapes (float32): bert-base
(BertModel, the embeddings server), gpt2 (GPT-2 small, the completions server) and whisper-base (the audio server).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

MODELS = ("bert-base", "gpt2", "whisper-base")
MODES = ("as loaded", "frozen in place", "frozen copy")

_CHILD = r"""
import gc, json, sys, time
from dataclasses import replace
kind, path, mode = sys.argv[1:4]
from forgegrad.nn.utils.freeze import freeze, packed_nbytes
from forgegrad.serve.openai_routes import served_model
if kind == "bert-base":
    from forgegrad.serve.embeddings import Embedder as factory
    from forgegrad.serve.encoder_app import EncoderServeConfig as Config
    args = (32,)
elif kind == "gpt2":
    from forgegrad.serve.completions import TextGenerator as factory, GenerationServeConfig as Config
    args = ()
else:
    from forgegrad.serve.speech_app import Transcriber as factory, SpeechServeConfig as Config
    args = ()

def status():
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmHWM", "VmRSS")}

t0 = time.perf_counter()
worker = served_model(Config(path, freeze=mode == "frozen in place"), factory, args)
if mode == "frozen copy":
    worker.model = freeze(worker.model)
    gc.collect()
seconds = time.perf_counter() - t0
packed = packed_nbytes(worker.model)
weights = sum(p.numpy().nbytes for p in worker.model.parameters())
print(json.dumps(dict(status(), seconds=seconds, packed_mib=packed / 2**20, weights_mib=weights / 2**20)))
"""


def write(kind: str, path: str) -> None:
    import torch
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    if kind == "bert-base":
        transformers.BertModel(transformers.BertConfig()).save_pretrained(path)
        from tokenizers import BertWordPieceTokenizer
        tok = BertWordPieceTokenizer(lowercase=True)
        tok.train_from_iterator(["a tiny corpus for a tokenizer"] * 10, vocab_size=120)
        tok.save(os.path.join(path, "tokenizer.json"))
    elif kind == "gpt2":
        transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(path)
    else:
        from tokenizers import Tokenizer, models
        cfg = transformers.WhisperConfig(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                                         decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048)
        transformers.WhisperForConditionalGeneration(cfg).save_pretrained(path)
        transformers.WhisperFeatureExtractor().save_pretrained(path)
        Tokenizer(models.WordLevel({"<|endoftext|>": 0}, unk_token="<|endoftext|>")).save(
            os.path.join(path, "tokenizer.json"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", nargs="+", choices=MODELS, default=list(MODELS))
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.path.join(os.path.dirname(__file__), "..",
                                                                                 "python"),
                                                                    os.environ.get("PYTHONPATH")])))
    for kind in args.model:
        with tempfile.TemporaryDirectory() as tmp:
            write(kind, tmp)
            print(f"{kind}:")
            for mode in MODES:
                out = subprocess.run([sys.executable, "-c", _CHILD, kind, tmp, mode], env=env, check=True,
                                     capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(f"  {mode:16s} peak {r['VmHWM']:7.0f} MiB  after load {r['VmRSS']:7.0f} MiB  (parameters "
                      f"{r['weights_mib']:.0f} MiB, packed {r['packed_mib']:.0f} MiB; load {r['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
