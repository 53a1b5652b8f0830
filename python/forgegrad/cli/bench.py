"""``forgegrad bench``: run suites of the forgegrad.bench registry (placeholder until it lands)."""
from __future__ import annotations

SUITES = ("gemm", "conv", "lstm", "gru", "adam", "train", "all")


def add_parser(sub):
    p = sub.add_parser("bench", help="benchmark forgegrad against numpy, torch and onnxruntime")
    p.add_argument("suite", nargs="?", default="all", choices=SUITES)
    p.add_argument("--report", default=None, metavar="DIR")
    p.add_argument("--threads", default=None)
    p.add_argument("--quick", action="store_true")
    p.set_defaults(run=run)
    return p


def run(args, log=print):
    from ._errors import require
    require("forgegrad.bench", None, what="benchmarks (forgegrad.bench)")
    return 0
