"""report.md, results.json and curves for ``forgegrad bench scaling --report DIR``."""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

from ..bench import _compare as C
from ..bench import _scaling as S
from . import _report


def _fmt_x(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def crossing_lines(rows: Sequence[dict]) -> List[str]:
    """One sentence per reference: where forgegrad's curve crosses it, or that it does not (rows of
    one sweep)."""
    out = []
    xlabel, threads_axis = rows[0].get("xlabel", "size"), rows[0].get("threads_axis", False)
    for ref in C.references(rows):
        speed = [(r["x"], s["median"]) for r in rows if (s := C.speedup(r, ref)) is not None]
        if not speed:
            continue
        lo, hi = min(v for _, v in speed), max(v for _, v in speed)
        if threads_axis:  # a handful of integer points: crossings between them mean little
            out.append(f"- vs {ref}: speed-up at " + ", ".join(f"{x} thread{'s' if x > 1 else ''} {v:.2f}x"
                                                               for x, v in speed) + ".")
            continue
        cross = S.crossings(rows, ref)
        tied = S.ties(rows, ref)
        tie_text = (f"; level with {ref} (within 3 % or the rounds' spread) at {xlabel} "
                    + ", ".join(map(str, tied))) if tied else ""
        if not cross:
            side = "faster" if lo >= 1 else ("slower" if hi < 1 else "level")
            if tied and side == "level":
                side = "faster or level" if all(v >= 1 or x in tied for x, v in speed) else (
                    "slower or level" if all(v <= 1 or x in tied for x, v in speed) else side)
            out.append(f"- vs {ref}: no crossing; forgegrad is {side} at every {xlabel} measured "
                       f"({lo:.2f}x-{hi:.2f}x){tie_text}.")
            continue
        parts = [f"{'overtakes' if c['direction'] == 'forgegrad ahead' else 'falls behind'} {ref} at "
                 f"{xlabel} ≈ {_fmt_x(c['x'])} (between {c['between'][0]} and {c['between'][1]})"
                 for c in cross]
        out.append(f"- vs {ref}: forgegrad " + "; then ".join(parts) + f" (speed-up {lo:.2f}x-{hi:.2f}x){tie_text}.")
    return out


def _series(rows: Sequence[dict]) -> Dict[str, list]:
    """{runtime: [(x, throughput, (lo, hi))]}: work per second from the median and the round band."""
    series: Dict[str, list] = {}
    for r in sorted(rows, key=lambda r: r["x"]):
        for rt in r["seconds"]:
            s = C.row_samples(r, rt)
            if not s:
                continue
            b = C.band(s)
            series.setdefault(rt, []).append((r["x"], r["work"] / b["median"], (r["work"] / b["max"],
                                                                                   r["work"] / b["min"])))
    return series


def _mib(m: Optional[dict], key: str) -> str:
    return "-" if not m or m.get(key) is None else f"{m[key] / 1024:.1f} MiB"


def memory_lines(memory: Sequence[dict]) -> List[str]:
    """Table of peak RSS per model, runtime and batch, and how fast each curve grows with the batch."""
    if not memory:
        return []
    lines = ["| model | batch | forgegrad peak RSS | forgegrad step | torch peak RSS | torch step | step ratio |",
             "|---|---|---|---|---|---|---|"]
    by = {(m["model"], m["runtime"], m["batch"]): m for m in memory}
    models = list(dict.fromkeys(m["model"] for m in memory))
    for model in models:
        for b in sorted({m["batch"] for m in memory if m["model"] == model}):
            f, t = by.get((model, "forgegrad", b)), by.get((model, "torch", b))
            ratio = (f"{f['step_kib'] / t['step_kib']:.2f}" if f and t and f.get("step_kib") and t.get("step_kib")
                     else "-")
            lines.append(f"| {model} | {b} | {_mib(f, 'peak_kib')} | {_mib(f, 'step_kib')} | {_mib(t, 'peak_kib')} "
                         f"| {_mib(t, 'step_kib')} | {ratio} |")
    lines.append("")
    for model in models:
        slopes = {}
        for rt in ("forgegrad", "torch"):
            pts = sorted((m["batch"], m["step_kib"]) for m in memory if m["model"] == model and m["runtime"] == rt
                         and m.get("step_kib") is not None)
            g = S.growth_slope([p[0] for p in pts], [p[1] / 1024 for p in pts])
            if g is not None:
                slopes[rt] = g
        if slopes:
            text = ", ".join(f"{rt} {g * 1024:.0f} KiB" for rt, g in slopes.items())
            if len(slopes) == 2 and slopes["torch"] > 0:
                ratio = slopes["forgegrad"] / slopes["torch"]
                pace = "no faster than" if ratio <= 1.0 else "faster than"
                text += f" ({ratio:.2f}x torch's: forgegrad's memory grows {pace} torch's)"
            lines.append(f"- {model}: step memory per extra sample over the larger batches: {text}.")
    return lines


def memory_chart(model: str, memory: Sequence[dict], out_dir: str) -> Optional[str]:
    from . import _charts
    series = {}
    for rt in ("forgegrad", "torch"):
        pts = sorted((m["batch"], m["step_kib"] / 1024, None) for m in memory
                     if m["model"] == model and m["runtime"] == rt and m.get("step_kib"))
        if pts:
            series[rt] = pts
    if not series:
        return None
    return _charts.curves_chart(series, os.path.join(out_dir, f"memory_{model}.png"),
                                f"{S.MODEL_TITLES.get(model, model)} training step: peak RSS above the built model, "
                                "fresh process",
                                "batch size", "MiB (peak RSS - RSS before the first step)")


def write(rows: Sequence[dict], memory: Sequence[dict], out_dir: str, fingerprint: dict,
          threads: int) -> List[str]:
    """Write results.json (rows + "memory"), one curve per sweep, memory curves and report.md."""
    from . import _charts
    os.makedirs(out_dir, exist_ok=True)
    written = [_report.write_results(os.path.join(out_dir, "results.json"), rows, fingerprint, kind="scaling",
                                     memory=list(memory))]
    lines = ["# forgegrad scaling", "", "## Machine", ""] + _report.summary_lines(fingerprint) + ["", "## Method", ""]
    lines += _report.method_lines()
    lines += ["", f"Size sweeps run at {threads} thread(s) on every runtime; thread sweeps pin every runtime to "
              "the x-axis count and time every point by wall time (size sweeps at 1 thread use the calling "
              "thread's CPU time). Curves show throughput (work per second, median; the band spans the rounds) "
              "on log axes; a dotted line marks where forgegrad's curve crosses a reference's.", ""]
    plot = _charts.available()
    for name in dict.fromkeys(r["sweep"] for r in rows):
        srows = [r for r in rows if r["sweep"] == name]
        title, xlabel, threads_axis = srows[0].get("title", name), srows[0].get("xlabel", "size"), \
            srows[0].get("threads_axis", False)
        lines += [f"## {title}", ""]
        cross_text = crossing_lines(srows)
        lines += cross_text or ["- no reference installed to compare with."]
        if plot:
            marks = [] if threads_axis else [
                (c["x"], f"{'ahead of' if c['direction'] == 'forgegrad ahead' else 'behind'} {ref} "
                         f"from {_fmt_x(c['x'])}") for ref in C.references(srows) for c in S.crossings(srows, ref)]
            unit = srows[0]["work_unit"]
            p = _charts.curves_chart(_series(srows), os.path.join(out_dir, f"scaling_{name}.png"),
                                     title, xlabel, f"{unit} per second (higher is better)", marks)
            written.append(p)
            lines += ["", f"![scaling_{name}.png](scaling_{name}.png)"]
        lines += [""] + _report.table_lines(srows) + [""]
    if memory:
        lines += ["## Peak memory of the training steps", "",
                  "Each point is a fresh process that imports only the runtime it measures, builds the model and "
                  "Adam, then runs 3 steps at one thread; `peak RSS` is the process's high-water mark (VmHWM), "
                  "`step` the part above the RSS before the first step (batch, activations, gradients, optimizer "
                  "state). torch's larger base RSS is its import.", ""]
        lines += memory_lines(memory)
        if plot:
            for model in dict.fromkeys(m["model"] for m in memory):
                p = memory_chart(model, memory, out_dir)
                if p:
                    written.append(p)
                    lines += ["", f"![{os.path.basename(p)}]({os.path.basename(p)})"]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return [path] + written
