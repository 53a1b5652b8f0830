"""python -m forgegrad.bench SUITE [--threads 1 2] [--quick] [--json FILE]

Times forgegrad against numpy (OpenBLAS) and torch, each pinned to the same thread count, and
prints one table row per workload and thread count. For numpy's usual speed run it as
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m forgegrad.bench gemm`.
"""
from __future__ import annotations

import argparse
import json
import sys

from . import format_table, run, suites
from ._timing import openblas_env_warning


def main(argv=None) -> int:
    names = sorted(suites())
    p = argparse.ArgumentParser(prog="python -m forgegrad.bench", description=__doc__.splitlines()[2])
    p.add_argument("suite", choices=names + ["all"], help="benchmark suite to run")
    p.add_argument("--threads", type=int, nargs="+", default=[1], metavar="N",
                   help="thread counts to run at (default: 1)")
    p.add_argument("--quick", action="store_true", help="fewer workloads and repeats")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(argv)
    if any(t < 1 for t in args.threads):
        p.error("--threads must be >= 1")
    warning = openblas_env_warning()
    if warning:
        print(warning, file=sys.stderr)
    rows = []
    for name in names if args.suite == "all" else [args.suite]:
        suite_rows = run(name, args.threads, args.quick)
        print(f"== {name}")
        print(format_table(suite_rows), flush=True)
        rows += [dict(r, suite=name) for r in suite_rows]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
