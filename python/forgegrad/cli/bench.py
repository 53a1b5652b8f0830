"""``forgegrad bench [SUITE] [--report DIR] [--threads 1,2] [--quick]``: run suites of the
forgegrad.bench registry (gemm, conv, lstm/gru, adam, train, ...) and optionally write a report."""
from __future__ import annotations

import os
import sys

from ._errors import CLIError, UsageError, require

# names users may type for suites registered under another name
ALIASES = {"lstm": ("lstm", "rnn"), "gru": ("gru", "rnn"), "vae": ("vae", "train"), "mlp": ("mlp", "train")}


def add_parser(sub):
    p = sub.add_parser("bench", help="benchmark forgegrad against numpy, torch and onnxruntime",
                       description="Run benchmark suites from forgegrad.bench (e.g. gemm, conv, lstm, gru, adam, "
                                   "train; 'all' runs every registered suite). Threads are pinned to the same "
                                   "count on every runtime for each row; runtimes that are not installed are "
                                   "reported as absent.")
    p.add_argument("suite", nargs="?", default="all", metavar="SUITE",
                   help="suite name, or 'all' (default)")
    p.add_argument("--threads", nargs="+", default=["1"], metavar="N",
                   help="thread counts to run at: --threads 1 2 or --threads 1,2 (default 1)")
    p.add_argument("--quick", action="store_true", help="fewer workloads and repeats")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write DIR/report.md (table), DIR/results.json and one chart PNG per suite")
    p.set_defaults(run=run)
    return p


def parse_threads(text):
    if isinstance(text, (list, tuple)):
        text = " ".join(text)
    try:
        values = [int(t) for t in str(text).replace(",", " ").split()]
    except ValueError:
        raise UsageError(f"--threads expects positive integers such as 1,2; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"--threads expects positive integers such as 1,2; got {text!r}")
    return values


def resolve_suites(name, registered):
    """[(suite, workload prefix to keep or None)]: ``lstm`` runs the rnn suite's lstm rows, say."""
    if name == "all":
        return [(n, None) for n in sorted(registered)]
    for candidate in ALIASES.get(name, (name,)):
        if candidate in registered:
            return [(candidate, None if candidate == name else name)]
    raise UsageError(f"unknown benchmark suite {name!r}; available: {', '.join(sorted(registered) + ['all'])}")


def run(args, log=print):
    threads = parse_threads(args.threads)
    if args.report is not None and os.path.exists(args.report) and not os.path.isdir(args.report):
        raise UsageError(f"--report {args.report} exists and is not a directory")
    bench = require("forgegrad.bench", None, what="benchmarks (forgegrad.bench)")
    registered = bench.suites()
    names = resolve_suites(args.suite, registered)
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"note: {var} is set; numpy's OpenBLAS may run slower than usual "
                  "(run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE forgegrad bench ...`)", file=sys.stderr)
            break
    rows = []
    for name, prefix in names:
        try:
            suite_rows = bench.run(name, threads, args.quick)
        except ImportError as e:  # a suite whose own dependency is missing
            raise CLIError(f"benchmark suite {name!r} cannot run: {e}") from None
        if prefix is not None:
            kept = [r for r in suite_rows if r["workload"].lower().startswith(prefix)]
            suite_rows = kept or suite_rows  # a suite without such rows: show all of it
        log(f"== {name}")
        log(bench.format_table(suite_rows))
        details = bench.format_details(name, suite_rows)
        if details:
            log(details)
        rows += [dict(r, suite=name) for r in suite_rows]
    if args.report is not None:
        from . import _report
        written = _report.write(rows, args.report, title="forgegrad benchmarks: " + ", ".join(n for n, _ in names))
        log("report: " + ", ".join(written))
        if not any(p.endswith(".png") for p in written):
            log('no charts: matplotlib is not installed (pip install "forgegrad[plot]")')
    return 0
