"""Benchmark reports for ``forgegrad bench --report DIR``: report.md, results.json and charts.

Input rows are dicts: {"suite", "workload", "threads", "seconds": {runtime: seconds or None}} where a
runtime missing from ``seconds`` is "not measured" and None means "not installed" (reported as absent).
"""
from __future__ import annotations

import json
import os
import platform
import time

from .. import _runtime
from ._errors import optional

REFERENCES = ("numpy", "torch", "onnxruntime")


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


def environment():
    info = {"python": platform.python_version(), "machine": platform.machine(), "cpu": _runtime.cpu_info(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for name in REFERENCES + ("onnx",):
        mod = optional(name)
        info[name] = getattr(mod, "__version__", "installed") if mod is not None else "absent"
    return info


def table_lines(rows):
    """A markdown table: workload, threads, each runtime's time, ratios vs each installed reference."""
    runtimes = _runtimes(rows)
    refs = [r for r in runtimes if r != "forgegrad"]
    head = ["suite", "workload", "threads"] + runtimes + [f"vs {r}" for r in refs]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        t = r["seconds"]
        cells = [r["suite"], r["workload"], str(r["threads"])]
        cells += [_fmt_time(t.get(k), k in t) for k in runtimes]
        for ref in refs:
            q = ratio(t, ref)
            cells.append(f"{q:.2f}x" if q is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write(rows, out_dir, title="forgegrad benchmarks"):
    """Write report.md, results.json and one chart per suite (when matplotlib is installed).
    Returns the list of written paths."""
    os.makedirs(out_dir, exist_ok=True)
    env = environment()
    written = []
    path = os.path.join(out_dir, "results.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"environment": env, "results": rows}, f, indent=2, default=str)
        f.write("\n")
    written.append(path)
    charts = _charts(rows, out_dir)
    written += charts
    lines = [f"# {title}", "",
             f"CPU SIMD path: {env['cpu'].get('active_isa', '?')} (detected {env['cpu'].get('detected_isa', '?')}); "
             f"python {env['python']}; " + ", ".join(f"{k} {env[k]}" for k in REFERENCES + ("onnx",)), "",
             "Times are medians per call; threads are pinned on every runtime for each row. "
             "`vs X` is X's time divided by forgegrad's: above 1 means forgegrad is faster. "
             "`absent`: that runtime is not installed; `-`: not measured for this workload.", ""]
    lines += table_lines(rows)
    if charts:
        lines += [""] + [f"![{os.path.basename(c)}]({os.path.basename(c)})" for c in charts]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    written.insert(0, path)
    return written


def _charts(rows, out_dir):
    mpl = optional("matplotlib")
    if mpl is None or not rows:
        return []
    mpl.use("Agg", force=True)
    import matplotlib.pyplot as plt
    paths = []
    for suite in dict.fromkeys(r["suite"] for r in rows):
        srows = [r for r in rows if r["suite"] == suite]
        runtimes = [k for k in _runtimes(srows) if any(r["seconds"].get(k) for r in srows)]
        labels = [f"{r['workload']}\n({r['threads']}t)" for r in srows]
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(srows) + 2), 4))
        width = 0.8 / max(len(runtimes), 1)
        for i, rt in enumerate(runtimes):
            vals = [(r["seconds"].get(rt) or 0) * 1e3 for r in srows]
            ax.bar([j + i * width for j in range(len(srows))], vals, width, label=rt)
        ax.set_xticks([j + width * (len(runtimes) - 1) / 2 for j in range(len(srows))])
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel("time per call (ms, lower is better)")
        ax.set_title(f"{suite}")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{suite}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
