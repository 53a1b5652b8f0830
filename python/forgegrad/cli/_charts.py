"""Charts of ``forgegrad bench``: speed-up per suite, a summary across suites, and run-to-run change.

Every chart is drawn from result rows alone (the results.json schema), so a suite added to the
registry gets its charts without code here. matplotlib (the ``plot`` extra) is imported lazily
with the Agg backend; callers check ``available()`` first.

Speed-ups are reference time / forgegrad time on a log axis, drawn as bars that start at 1.0x: a
bar to the right means forgegrad is faster, to the left slower, and the length reads the same for
2x faster and 2x slower. The whisker on a bar spans the per-round speed-ups (min to max over the
interleaved rounds), so a bar whose whisker crosses 1.0x is a tie on this machine.
"""
from __future__ import annotations

import math
import textwrap
from typing import Dict, List, Optional, Sequence

from ..bench import _compare as C

LABEL_WIDTH = 34  # characters per line of a wrapped workload label
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
# one colour per runtime in every chart; other runtime names take the remaining colours in turn
RUNTIME_COLORS = {"forgegrad": COLORS[0], "numpy": COLORS[1], "torch": COLORS[2], "onnxruntime": COLORS[3]}
# new/old ratios labelled on the compare chart's log axis (as changes: 0.8 is -20 %, 2 is +100 %)
CHANGE_TICKS = (0.1, 0.2, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)
VERDICT_COLORS = {"regression": "#d62728", "improvement": "#2ca02c", "within noise": "#9e9e9e", "drift": "#e0b040"}


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def colors_for(names: Sequence[str]) -> Dict[str, str]:
    """{runtime: colour}: the fixed RUNTIME_COLORS, then unused COLORS in turn for other names."""
    spare = [c for c in COLORS if c not in RUNTIME_COLORS.values()]
    out, i = {}, 0
    for n in names:
        if n in RUNTIME_COLORS:
            out[n] = RUNTIME_COLORS[n]
        else:
            out[n] = spare[i % len(spare)]
            i += 1
    return out


def _log_y_formatter(ax, values: Sequence[float]):
    """Plain numbers on a log y axis; labelled 2x and 5x minor ticks when it spans under two decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    vals = [v for v in values if v and v > 0]
    if vals and max(vals) / min(vals) < 100:
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 3.0, 5.0)))
        ax.yaxis.set_minor_formatter(fmt)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def _threads_suffix(n: int) -> str:
    """' · 2 thr' with no-break spaces: wrapping may move it to the next line but never splits it."""
    return f" ·\u00a0{n}\u00a0thr"


def wrap_label(text: str, width: int = LABEL_WIDTH, max_lines: int = 3) -> str:
    """Wrap a long workload name onto at most max_lines lines (the last one shortened with ...)."""
    lines = textwrap.wrap(text, width=width, break_on_hyphens=False) or [text]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = textwrap.shorten(lines[-1] + " ...", width=width, placeholder="...")
    return "\n".join(lines)


def _log_limits(values: Sequence[float], pad_right: float = 1.9):
    """x limits on a log axis holding every value and 1.0, with room right of the largest for a label."""
    lo, hi = min(list(values) + [1.0]), max(list(values) + [1.0])
    lo, hi = min(lo / 1.3, 0.8), max(hi * pad_right, 1.25)
    return lo, hi


def _fmt_x(v: float) -> str:
    return f"{v:.0f}x" if v >= 100 else (f"{v:.1f}x" if v >= 10 else f"{v:.2f}x")


def _x_formatter(ax):
    """Speed-up ticks: 1x, 2x, 5x, 10x, ... on a short axis, decades only on a long one."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    lo, hi = ax.get_xlim()
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if hi / lo < 1e4 else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def speedup_chart(rows: Sequence[dict], path: str, title: str) -> Optional[str]:
    """One horizontal bar per (row, reference): forgegrad's speed-up, its per-round band and value.
    Returns path, or None when no row has a reference to compare with."""
    refs = C.references(rows)
    multi_threads = len({r.get("threads", 1) for r in rows}) > 1
    groups = []  # (label, [(reference, band)])
    for r in rows:
        bars = [(ref, s) for ref in refs if (s := C.speedup(r, ref)) is not None]
        if bars:
            name = r["workload"] + (_threads_suffix(r.get("threads", 1)) if multi_threads else "")
            groups.append((wrap_label(name), bars))
    if not groups:
        return None
    plt = _plt()
    used = [ref for ref in refs if any(ref == b[0] for _, bars in groups for b in bars)]
    color = colors_for(used)
    bar_h = 0.8 / max(len(bars) for _, bars in groups)
    n_bars = sum(len(bars) for _, bars in groups)
    label_lines = sum(lbl.count("\n") + 1 for lbl, _ in groups)
    height = max(2.6, 0.28 * n_bars + 0.16 * label_lines + 0.5 * len(groups) ** 0.5 + 1.4)
    fig, ax = plt.subplots(figsize=(10, height))
    values, yticks = [], []
    for g, (label, bars) in enumerate(groups):
        y0 = g - len(bars) * bar_h / 2 + bar_h / 2  # the group's bars centred on its label
        for i, (ref, s) in enumerate(bars):
            y = y0 + i * bar_h
            v = s["median"]
            values += [s["min"], s["max"], v]
            ax.barh(y, v - 1.0, left=1.0, height=bar_h * 0.9, color=color[ref],
                    label=ref if ref not in ax.get_legend_handles_labels()[1] else None)
            if s["n"] > 1:
                ax.plot([s["min"], s["max"]], [y, y], color="black", lw=0.8)
            end = max(v, s["max"]) if v >= 1 else min(v, s["min"])
            ax.text(end * (1.04 if v >= 1 else 1 / 1.04), y, _fmt_x(v), va="center",
                    ha="left" if v >= 1 else "right", fontsize=8)
        yticks.append(g)
    lo, hi = _log_limits(values)
    ax.set_xscale("log")
    ax.set_xlim(lo / 1.4, hi)
    _x_formatter(ax)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(yticks)
    ax.set_yticklabels([lbl for lbl, _ in groups], fontsize=8)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xlabel("speed-up: reference time / forgegrad time (log; > 1x: forgegrad faster; "
                  "whisker: min-max over rounds)", fontsize=8)
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(axis="x", which="major", alpha=0.3)
    # a row of references at the bottom of the figure: never over a bar, the title or the axis label
    handles, names = ax.get_legend_handles_labels()
    ncol = min(len(names), 5)
    fig.legend(handles, [f"vs {n}" for n in names], loc="lower center", ncol=ncol, fontsize=8, frameon=False,
               handlelength=1.2)
    fig.tight_layout(rect=(0, (0.12 + 0.22 * math.ceil(len(names) / ncol)) / height, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary_chart(rows: Sequence[dict], path: str, title: str = "forgegrad speed-up by suite") -> Optional[str]:
    """Per (suite, reference[, thread count]): a bar at the geometric mean speed-up over the suite's
    rows, a dot per row, and the range printed. Returns path, or None when nothing compares."""
    entries = []  # (label, geomean, [per-row speed-ups], reference)
    # one line per thread count when the rows have several: a 2-thread ratio on a busy machine says
    # something else than a 1-thread one, and a geometric mean over both would hide it
    thread_counts = sorted({r.get("threads", 1) for r in rows})
    for suite in dict.fromkeys(r.get("suite", "") for r in rows):
        for n in thread_counts:
            srows = [r for r in rows if r.get("suite", "") == suite and r.get("threads", 1) == n]
            for ref in C.references(srows):
                vals = [s["median"] for r in srows if (s := C.speedup(r, ref)) is not None]
                if vals:
                    label = f"{suite} vs {ref}" + (_threads_suffix(n) if len(thread_counts) > 1 else "")
                    entries.append((label, C.geomean(vals), vals, ref))
    if not entries:
        return None
    plt = _plt()
    refs = list(dict.fromkeys(e[3] for e in entries))
    color = colors_for(refs)
    fig, ax = plt.subplots(figsize=(11, max(2.6, 0.36 * len(entries) + 1.5)))
    allv = []
    for y, (label, gm, vals, ref) in enumerate(entries):
        allv += vals + [gm]
        ax.barh(y, gm - 1.0, left=1.0, height=0.6, color=color[ref], alpha=0.85)
        ax.scatter(vals, [y] * len(vals), s=14, color="black", zorder=3)
        text = (f"{_fmt_x(gm)} geomean of {len(vals)} ({_fmt_x(min(vals))} to {_fmt_x(max(vals))})"
                if len(vals) > 1 else f"{_fmt_x(gm)} (1 row)")
        # in a column right of the plot: never over a dot, however far the dots reach
        ax.annotate(text, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    lo, hi = _log_limits(allv, pad_right=1.4)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    _x_formatter(ax)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(range(len(entries)))
    ax.set_yticklabels([e[0] for e in entries], fontsize=9)
    ax.set_ylim(len(entries) - 0.5, -0.5)
    ax.set_xlabel("speed-up over the reference (log; > 1x: forgegrad faster; bar: geometric mean over the "
                  "suite's rows, dots: each row)", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", which="major", alpha=0.3)
    fig.tight_layout()  # counts the text column right of the axes in
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _spaced_ticks(lo: float, hi: float, n: int = 9) -> List[float]:
    """CHANGE_TICKS within [lo, hi], walking out from 1.0 and keeping a tick only when it is at least
    1/n of the axis (in log) away from the last one kept, so that labels never run together."""
    gap = math.log(hi / lo) / n
    kept = [1.0]
    for side in ([t for t in CHANGE_TICKS if 1.0 < t <= hi], [t for t in reversed(CHANGE_TICKS) if lo <= t < 1.0]):
        last = 1.0
        for t in side:
            if abs(math.log(t / last)) >= gap:
                kept.append(t)
                last = t
    return sorted(kept)


def compare_chart(entries: Sequence[dict], path: str, by: str = "auto") -> Optional[str]:
    """Per compared row: new median / old median as a bar from 1.0 (log), coloured by verdict, the
    old run's band (grey box) and the new run's band (whisker), both relative to the old median."""
    shown = [e for e in entries if e.get("old") and e.get("new")]
    if not shown:
        return None
    plt = _plt()
    multi_suite = len({e["suite"] for e in shown}) > 1
    multi_threads = len({e["threads"] for e in shown}) > 1
    labels = [wrap_label((f"{e['suite']}: " if multi_suite else "") + e["workload"]
                         + (_threads_suffix(e["threads"]) if multi_threads else "")) for e in shown]
    height = max(2.6, 0.3 * len(shown) + 0.13 * sum(lbl.count("\n") for lbl in labels) + 1.5)
    fig, ax = plt.subplots(figsize=(10, height))
    allv = []
    for y, e in enumerate(shown):
        o, n = e["old"], e["new"]
        m = o["median"]
        ratio = n["median"] / m
        lo_o, hi_o, lo_n, hi_n = o["min"] / m, o["max"] / m, n["min"] / m, n["max"] / m
        allv += [ratio, lo_o, hi_o, lo_n, hi_n]
        ax.add_patch(plt.Rectangle((lo_o, y - 0.35), hi_o - lo_o, 0.7, color="#dddddd", zorder=0))
        ax.barh(y, ratio - 1.0, left=1.0, height=0.5, color=VERDICT_COLORS.get(e["verdict"], "#9e9e9e"), zorder=2)
        ax.plot([lo_n, hi_n], [y, y], color="black", lw=0.8, zorder=3)
        ax.text(max(ratio, hi_n, hi_o) * 1.03, y, f"{e['change'] * 100:+.1f}% {e['verdict']}", va="center",
                fontsize=8)
    lo, hi = _log_limits(allv, pad_right=2.6)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
    ax.xaxis.set_major_locator(FixedLocator(_spaced_ticks(lo, hi)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{(v - 1) * 100:+.0f}%"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    what = "forgegrad time" if by in ("time", "auto") else f"forgegrad time / {by} time"
    ax.set_xlabel(f"change of {what}, new vs old median (right: slower; grey: old run's rounds, "
                  "whisker: new run's rounds)", fontsize=8)
    threads = "" if multi_threads else f" ({shown[0]['threads']} thread{'s' if shown[0]['threads'] > 1 else ''})"
    ax.set_title("forgegrad bench compare" + threads, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curves_chart(series: Dict[str, List[tuple]], path: str, title: str, xlabel: str, ylabel: str,
                 crossings: Sequence[tuple] = (), logy: bool = True) -> str:
    """Log-log curves: series = {runtime: [(x, y, (ylo, yhi) or None), ...]}; crossings =
    [(x, label)] marked with a dotted vertical line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.6))
    color = colors_for(list(series))
    ys_all = []
    for name, pts in series.items():
        pts = [p for p in pts if p[1] is not None]
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ys_all += ys
        style = "-o" if name == C.SUBJECT else "--s"
        ax.plot(xs, ys, style, ms=4, lw=2 if name == C.SUBJECT else 1.3, color=color[name], label=name)
        bands = [(p[0], p[2]) for p in pts if p[2] is not None]
        if bands:
            ys_all += [b[1][0] for b in bands] + [b[1][1] for b in bands]
            ax.fill_between([b[0] for b in bands], [b[1][0] for b in bands], [b[1][1] for b in bands],
                            color=color[name], alpha=0.15, lw=0)
    for x, label in crossings:
        ax.axvline(x, color="#555555", ls=":", lw=1)
        ax.annotate(label, (x, 0.02), xycoords=("data", "axes fraction"), xytext=(4, 0),
                    textcoords="offset points", va="bottom", fontsize=7, rotation=90, color="#222222",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
        _log_y_formatter(ax, ys_all)
    from matplotlib.ticker import FuncFormatter
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

