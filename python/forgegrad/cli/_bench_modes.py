"""``forgegrad bench scaling`` and ``forgegrad bench compare OLD.json NEW.json``."""
from __future__ import annotations

import time

from ..bench import _compare as C
from ._errors import EXIT_OK, EXIT_RUNTIME, UsageError

EXIT_REGRESSION = EXIT_RUNTIME  # `bench compare` found a regression beyond the noise


def run_scaling(args, threads, log=print):
    from ..bench import _scaling as S
    from ..bench._fingerprint import fingerprint
    registered = S.sweeps()
    names = list(registered) if not args.only else [n for t in args.only for n in t.replace(",", " ").split()]
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise UsageError(f"--only: unknown sweep {unknown[0]!r}; known: {', '.join(registered)}")
    if len(threads) != 1:
        raise UsageError("bench scaling takes one --threads count (the thread sweeps cover 1..all cores)")
    fp = fingerprint()  # before timing: the thread settings as the user set them
    t0 = time.perf_counter()
    rows, memory = [], []
    for name in names:
        sweep = registered[name]
        log(f"== scaling: {sweep.title} ({sweep.xlabel} {', '.join(map(str, S.points(sweep, args.quick)))})")
        rows += S.run_sweep(sweep, args.quick, threads[0], log=log)
        # peak memory of every training step in full runs; --quick keeps the LeNet curve only
        if sweep.memory and not args.no_memory and (not args.quick or sweep.memory == "lenet"):
            for b in S.points(sweep, args.quick):
                for rt in sweep.runtimes:
                    m = S.measure_memory(sweep.memory, rt, b)
                    if m is not None:
                        memory.append(m)
                        log(f"  {sweep.memory} {rt} batch {b}: peak RSS {m['peak_kib'] / 1024:.1f} MiB"
                            + (f", step {m['step_kib'] / 1024:.1f} MiB" if m.get("step_kib") else ""))
    log(f"scaling: {time.perf_counter() - t0:.0f} s")
    if args.report is not None:
        from . import _scaling_report
        written = _scaling_report.write(rows, memory, args.report, fp, threads[0])
        log("report: " + ", ".join(written))
    return EXIT_OK


def run_compare(args, log=print):
    if len(args.files) != 2:
        raise UsageError("bench compare takes two results.json files: forgegrad bench compare OLD.json NEW.json")
    noise = C.DEFAULT_NOISE if args.noise is None else args.noise
    threshold = C.DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    if noise < 0 or threshold < 0:
        raise UsageError("--noise and --threshold must be >= 0 (fractions: 0.1 = 10%)")
    runs = []
    for path in args.files:
        try:
            runs.append(C.load_results(path))
        except ValueError as e:
            raise UsageError(str(e)) from None
    old, new = runs
    measured = old["results"] + new["results"]
    if args.by not in ("auto", "time") and not any(args.by in (r.get("seconds") or {}) for r in measured):
        raise UsageError(f"--by {args.by}: no row measured a runtime of that name "
                         f"(known: auto, time, {', '.join(C.references(measured))})")
    entries = C.compare_results(old["results"], new["results"], by=args.by, noise=noise, threshold=threshold)
    log(C.format_table(entries, args.by))
    counts = C.counts(entries)
    regressions = [e for e in entries if e["verdict"] == "regression"]
    log("compare: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + " (" + C.rule_text(args.by, noise, threshold)
        + ")")
    for e in regressions:
        log(f"REGRESSION: {e['suite']} / {e['workload']} / {e['threads']} thr: {e['change'] * 100:+.1f}%")
    if args.report is not None:
        from . import _report
        written = _report.write_compare(entries, old, new, args, args.report, by=args.by, noise=noise,
                                        threshold=threshold)
        log("report: " + ", ".join(written))
    if regressions and not args.no_fail:
        return EXIT_REGRESSION
    return EXIT_OK
