"""DeBERTa-v3 at deberta-v3-small's shape (random weights), forgegrad against transformers, one thread each: the rows
of `forgegrad bench hf-encoders` (forgegrad.bench.hf_encoders: the encoder's forward on batches of --tokens tokens,
forgegrad's ``nn.utils.freeze`` copy and the plain model, the outputs compared). With --onnx, also the model exported
to ONNX (dynamic batch and length) in onnxruntime, one intra-op thread.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/deberta_speed.py --batches 1 8 --tokens 128
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/deberta_speed.py --batches 1 --tokens 128 --onnx
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile forgegrad's forward at the last batch size")
    ap.add_argument("--onnx", action="store_true", help="also time the ONNX export of the model in onnxruntime")
    args = ap.parse_args()
    from forgegrad.bench import format_table
    from forgegrad.bench.hf_encoders import V3_SMALL, deberta_rows
    print(format_table(deberta_rows([1], quick=False, repeat=args.repeat, batches=args.batches, tokens=args.tokens,
                                    onnx=args.onnx)))
    if args.profile:
        import cProfile
        import pstats

        import forgegrad as fg
        from forgegrad.bench.hf_encoders import deberta_pair
        fg.set_num_threads(1)
        model, _ = deberta_pair()
        ids = np.random.default_rng(0).integers(1, V3_SMALL["vocab_size"], (args.batches[-1], args.tokens))
        with fg.no_grad():
            cProfile.runctx("model(ids)", globals(), {"model": model, "ids": ids}, "/tmp/deberta.prof")
        pstats.Stats("/tmp/deberta.prof").sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
