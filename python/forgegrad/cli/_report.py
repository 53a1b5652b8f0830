"""Benchmark reports for ``forgegrad bench --report DIR``: report.md, results.json and charts.

Input rows are dicts: {"suite", "workload", "threads", "seconds": {runtime: seconds or None},
"samples": {runtime: [seconds per round] or None}} where a runtime missing from ``seconds`` is "not
measured" and None means "not installed" (reported as absent). results.json is

    {"schema": 2, "kind": "bench" | "scaling", "fingerprint": {...machine, versions, command...},
     "results": [rows]}

and everything in the report (tables, charts, compare) is derived from it, for any suite.
"""
from __future__ import annotations

import json
import os
import re
from typing import List, Optional, Sequence

from ..bench import _compare as C
from ..bench._fingerprint import fingerprint as make_fingerprint
from ..bench._fingerprint import summary_lines

REFERENCES = ("numpy", "torch", "onnxruntime")
SUMMARY_PNG = "summary.png"


def _runtimes(rows):
    seen = ["forgegrad"]
    for r in rows:
        for k in r["seconds"]:
            if k not in seen:
                seen.append(k)
    order = {name: i for i, name in enumerate(("forgegrad",) + REFERENCES)}
    return sorted(seen, key=lambda k: order.get(k, len(order)))


def ratio(times, reference="torch"):
    """reference time / forgegrad time (above 1: forgegrad is faster), or None."""
    a, b = times.get("forgegrad"), times.get(reference)
    return (b / a) if a and b else None


def _fmt_time(t, present=True):
    if not present:
        return "-"
    if t is None:
        return "absent"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.3f} ms"
    return f"{t * 1e6:.1f} us"


def _spread(row, runtime) -> str:
    """" ±x%": half the per-round [min, max] range relative to the median ("" for one sample)."""
    s = C.row_samples(row, runtime)
    if not s or len(s) < 2:
        return ""
    b = C.band(s)
    return f" ±{(b['max'] - b['min']) / 2 / b['median'] * 100:.0f}%"


def table_lines(rows):
    """A markdown table: workload, threads, each runtime's median time (± half its per-round range),
    and forgegrad's speed-up over each reference (with the per-round min-max)."""
    runtimes = _runtimes(rows)
    refs = [r for r in runtimes if r != "forgegrad"]
    head = ["suite", "workload", "threads"] + runtimes + [f"vs {r}" for r in refs]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        t = r["seconds"]
        cells = [r.get("suite", ""), r["workload"].replace("|", "/"), str(r.get("threads", 1))]
        cells += [_fmt_time(t.get(k), k in t) + (_spread(r, k) if t.get(k) else "") for k in runtimes]
        for ref in refs:
            s = C.speedup(r, ref)
            if s is None:
                cells.append("-")
            else:
                cells.append(f"{s['median']:.2f}x" + (f" ({s['min']:.2f}-{s['max']:.2f})" if s["n"] > 1 else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "suite"


def write_results(path: str, rows: Sequence[dict], fingerprint: dict, kind: str = "bench", **extra) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict({"schema": C.SCHEMA, "kind": kind, "fingerprint": fingerprint, "results": list(rows)},
                       **extra), f, indent=1, default=str)
        f.write("\n")
    return path


def charts(rows, out_dir) -> List[str]:
    """speedup_SUITE.png per suite with a reference, and summary.png across suites ([] without
    matplotlib)."""
    from . import _charts
    if not rows or not _charts.available():
        return []
    paths = []
    for suite in dict.fromkeys(r.get("suite", "") for r in rows):
        srows = [r for r in rows if r.get("suite", "") == suite]
        p = _charts.speedup_chart(srows, os.path.join(out_dir, f"speedup_{_slug(suite)}.png"),
                                  f"{suite}: forgegrad speed-up over each reference")
        if p:
            paths.append(p)
    p = _charts.summary_chart(rows, os.path.join(out_dir, SUMMARY_PNG))
    if p:
        paths.insert(0, p)
    return paths


def method_lines() -> List[str]:
    return ["Times are medians over interleaved rounds (each round times every runtime once, so load from "
            "elsewhere hits all of them alike), after a warm-up, with a cool-down pause before each "
            "multithreaded sample; `±x%` is half the range between the fastest and slowest round. Threads are "
            "pinned to the row's count on every runtime. `vs X` is X's time divided by forgegrad's (above 1: "
            "forgegrad is faster), with the range of the per-round ratios. `absent`: that runtime is not "
            "installed; `-`: not measured for this workload."]


def write(rows, out_dir, title="forgegrad benchmarks", fingerprint: Optional[dict] = None):
    """Write results.json, the charts (when matplotlib is installed) and report.md. Returns the
    written paths, report.md first."""
    os.makedirs(out_dir, exist_ok=True)
    fp = fingerprint if fingerprint is not None else make_fingerprint()
    written = [write_results(os.path.join(out_dir, "results.json"), rows, fp)]
    pngs = charts(rows, out_dir)
    written += pngs
    lines = [f"# {title}", "", "## Machine", ""] + summary_lines(fp) + ["", "## Results", ""]
    lines += method_lines() + [""] + table_lines(rows)
    if pngs:
        lines += ["", "## Speed-up charts", "",
                  "Bars start at 1.0x: to the right forgegrad is faster, to the left slower (log scale); the "
                  "whisker spans the per-round speed-ups.", ""]
        lines += [f"![{os.path.basename(c)}]({os.path.basename(c)})" for c in pngs]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    written.insert(0, path)
    return written


def write_compare(entries, old, new, args, out_dir, by="auto", noise=C.DEFAULT_NOISE,
                  threshold=C.DEFAULT_THRESHOLD):
    """compare.md (both machines, the rule, the table) and compare.png. Returns the written paths."""
    from . import _charts
    os.makedirs(out_dir, exist_ok=True)
    written = []
    png = None
    if _charts.available():
        png = _charts.compare_chart(entries, os.path.join(out_dir, "compare.png"), by)
    counts = C.counts(entries)
    lines = ["# forgegrad bench compare", "",
             f"Old: `{args.files[0]}`; new: `{args.files[1]}`.", "",
             f"Rule: {C.rule_text(by, noise, threshold)}. Bands are median [min-max] over the interleaved rounds; "
             "see docs/benchmarks.md.", "",
             "Result: " + ", ".join(f"{n} {k}" for k, n in counts.items()), ""]
    lines += C.markdown_table(entries, by)
    if png:
        written.append(png)
        lines += ["", "![compare.png](compare.png)"]
    for label, run in (("Old run", old), ("New run", new)):
        lines += ["", f"## {label} machine", ""]
        lines += summary_lines(run["fingerprint"]) if run.get("fingerprint") else ["- no fingerprint (older file)"]
    path = os.path.join(out_dir, "compare.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return [path] + written
