"""``forgegrad bench [SUITE] [--report DIR] [--threads 1,2] [--quick]``: run suites of the
forgegrad.bench registry (gemm, conv, lstm/gru, adam, train, ...) and optionally write a report.

Two more forms (the words are not suite names):
  ``forgegrad bench scaling [--only NAME ...] [--report DIR] [--quick]``: speed and peak memory by size;
  ``forgegrad bench compare OLD.json NEW.json [--report DIR] [--by auto|time|REF] [--no-fail]``: change per
  workload between two runs, exit code 1 on a regression beyond the noise (forgegrad.bench._compare).
"""
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
                   help="suite name, or 'all' (default); 'scaling' for the scaling curves; "
                        "'compare OLD.json NEW.json' to compare two runs")
    p.add_argument("files", nargs="*", metavar="RESULTS.json", help="(compare) the old and the new results.json")
    p.add_argument("--threads", nargs="+", default=["1"], metavar="N",
                   help="thread counts to run at: --threads 1 2 or --threads 1,2 (default 1)")
    p.add_argument("--quick", action="store_true", help="fewer workloads and repeats")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu (default): the CPU suites; cuda: the GPU suite (forgegrad's CUDA kernels against "
                        "torch's cuBLAS/cuDNN on the same GPU), the same as SUITE cuda")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write DIR/report.md (machine fingerprint, tables), DIR/results.json and the charts")
    g = p.add_argument_group("scaling")
    g.add_argument("--only", nargs="+", default=None, metavar="SWEEP",
                   help="(scaling) run only these sweeps (sgemm, mlp, lenet, lstm, threads_sgemm, threads_lenet)")
    g.add_argument("--no-memory", action="store_true", help="(scaling) skip the peak-memory processes")
    g = p.add_argument_group("compare")
    g.add_argument("--by", default="auto", metavar="auto|time|REF",
                   help="(compare) auto (default): flag a row only when forgegrad's time regressed and so did its time "
                        "relative to every reference of the row (a change a reference shares is 'drift': the "
                        "machine); time: forgegrad's time alone; REF (e.g. torch): its time relative to REF in the "
                        "same round")
    g.add_argument("--threshold", type=float, default=None, metavar="FRACTION",
                   help="(compare) smallest change that counts (default 0.10 = 10%%)")
    g.add_argument("--noise", type=float, default=None, metavar="FRACTION",
                   help="(compare) margin added to the old run's [min, max] band (default 0.05)")
    g.add_argument("--no-fail", action="store_true", help="(compare) exit 0 even when a regression is found")
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
    raise UsageError(f"unknown benchmark suite {name!r}; available: "
                     f"{', '.join(sorted(registered) + ['all'])} (and 'scaling', 'compare')")


def run(args, log=print):
    if args.report is not None and os.path.exists(args.report) and not os.path.isdir(args.report):
        raise UsageError(f"--report {args.report} exists and is not a directory")
    if args.suite == "compare":
        from ._bench_modes import run_compare
        return run_compare(args, log)
    if args.files:
        raise UsageError(f"unexpected arguments {' '.join(args.files)!r} (only `bench compare` takes files)")
    threads = parse_threads(args.threads)
    if args.suite == "scaling":
        from ._bench_modes import run_scaling
        return run_scaling(args, threads, log)
    bench = require("forgegrad.bench", None, what="benchmarks (forgegrad.bench)")
    registered = bench.suites()
    if getattr(args, "device", "cpu") == "cuda":
        if args.suite not in ("all", "cuda"):
            raise UsageError(f"--device cuda runs the cuda suite; got suite {args.suite!r} (a CPU suite)")
        args.suite = "cuda"
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
        title = "forgegrad benchmarks: " + ", ".join(n for n, _ in names) + (" (--quick)" if args.quick else "")
        written = _report.write(rows, args.report, title=title)
        log("report: " + ", ".join(written))
        if not any(p.endswith(".png") for p in written):
            log('no charts: matplotlib is not installed (pip install "forgegrad[plot]")')
    return 0
