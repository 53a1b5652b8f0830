"""python -m forgegrad.bench SUITE [--threads 1 2] [--quick] [--json FILE] [--clock C] [--stat S]

Times forgegrad against numpy (OpenBLAS) and torch, each pinned to the same thread count, and
prints one table row per workload and thread count. For numpy's usual speed run it as
`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m forgegrad.bench gemm`.
"""
from __future__ import annotations

import argparse
import json
import sys

from . import format_details, format_table, run, suites
from . import _timing
from ._timing import openblas_env_warning


def main(argv=None) -> int:
    names = sorted(suites())
    p = argparse.ArgumentParser(prog="python -m forgegrad.bench",
                                description=" ".join(__doc__.split("\n\n")[1].split()))
    p.add_argument("suite", choices=names + ["all"], help="benchmark suite to run")
    p.add_argument("--threads", type=int, nargs="+", default=[1], metavar="N",
                   help="thread counts to run at (default: 1)")
    p.add_argument("--quick", action="store_true", help="fewer workloads and repeats")
    p.add_argument("--json", metavar="FILE", help="also write the rows (with per-round samples and the machine "
                                                  "fingerprint) as JSON, for `forgegrad bench compare`")
    p.add_argument("--clock", choices=["auto", "wall"], default="auto",
                   help="auto (default): 1-thread rows by the calling thread's CPU time, others by "
                        "wall time; wall: wall time everywhere")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="statistic over the repeated samples (default median; min on a busy machine)")
    args = p.parse_args(argv)
    if any(t < 1 for t in args.threads):
        p.error("--threads must be >= 1")
    _timing.CLOCK, _timing.STAT = args.clock, args.stat
    warning = openblas_env_warning()
    if warning:
        print(warning, file=sys.stderr)
    rows = []
    for name in names if args.suite == "all" else [args.suite]:
        suite_rows = run(name, args.threads, args.quick)
        print(f"== {name} (clock {args.clock}, {args.stat} of repeated samples)")
        print(format_table(suite_rows), flush=True)
        details = format_details(name, suite_rows)
        if details:
            print(details, flush=True)
        rows += [dict(r, suite=name) for r in suite_rows]
    if args.json:  # the results.json schema of `forgegrad bench --report`, so `bench compare` reads it
        from ._compare import SCHEMA
        from ._fingerprint import fingerprint
        with open(args.json, "w") as f:
            json.dump({"schema": SCHEMA, "kind": "bench", "fingerprint": fingerprint(),
                       "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
