"""Statistics over a row's interleaved rounds, and ``forgegrad bench compare OLD.json NEW.json``.

Every row of a results.json keeps, besides the median ``seconds``, the per-round ``samples`` of
each runtime (sample i of every runtime comes from the same interleaved round). From them:

* the **band** of a figure is [min, max] over its rounds, its centre the median;
* a **speed-up** per round is reference_i / forgegrad_i (same round, so a burst of machine load that
  slows both cancels out); its median and band are what the charts show;
* **compare** matches the rows of two runs by (suite, workload, threads) and judges forgegrad's
  cost in each, by one of three measures:

  - ``by="time"``: forgegrad's time per call;
  - ``by="torch"`` (any reference name): forgegrad's time relative to that reference's in the same
    round (forgegrad_i / torch_i), which cancels load that slows both alike;
  - ``by="auto"`` (the default): both, against every reference of the row (not forgegrad's own
    variants). A row is flagged only when its time AND its time relative to each reference moved
    beyond the rule; when the time moved but some reference moved alike, the verdict is "drift"
    (the machine changed between the runs, not the code: a slower kernel slows forgegrad against
    every reference). Rows without a reference are judged by time.

Rule, on the samples of the chosen cost (``noise`` and ``threshold`` are options):

    change = new median / old median - 1
    regression  if change > threshold  and  new median > old max * (1 + noise)
    improvement if change < -threshold and  new median < old min / (1 + noise)
    otherwise "within noise"

so a change counts only when it is both large (threshold, default 10 %) and outside the spread the
old run showed between its own rounds (widened by noise, default 5 %, because a few rounds
underestimate the spread). A row present in one run only is listed, never flagged.
"""
from __future__ import annotations

import json
import math
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

SUBJECT = "forgegrad"
SCHEMA = 2  # results.json "schema": 2 adds per-round samples and the machine fingerprint
DEFAULT_NOISE, DEFAULT_THRESHOLD = 0.05, 0.10


def row_key(row: dict) -> Tuple[str, str, int]:
    return (str(row.get("suite", "")), str(row["workload"]), int(row.get("threads", 1)))


def row_samples(row: dict, runtime: str) -> Optional[List[float]]:
    """Per-round seconds of `runtime` in `row` (a single sample for rows stored without samples), or
    None when that runtime is absent or not measured."""
    s = (row.get("samples") or {}).get(runtime)
    if s:
        return [float(v) for v in s]
    t = (row.get("seconds") or {}).get(runtime)
    return [float(t)] if t else None


def band(samples: Sequence[float]) -> dict:
    """{"median", "min", "max", "n"} of the samples."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def speedup_samples(row: dict, reference: str) -> Optional[List[float]]:
    """reference / forgegrad per interleaved round (> 1: forgegrad faster), or None."""
    a, b = row_samples(row, SUBJECT), row_samples(row, reference)
    if not a or not b:
        return None
    if len(a) == len(b):
        return [y / x for x, y in zip(a, b)]
    return [statistics.median(b) / statistics.median(a)]  # rounds do not pair up (hand-made rows)


def speedup(row: dict, reference: str) -> Optional[dict]:
    """band() of the per-round speed-ups over `reference`, with "median" the ratio of the two
    runtimes' medians (the figure the tables print), or None."""
    s = speedup_samples(row, reference)
    if s is None:
        return None
    out = band(s)
    out["median"] = statistics.median(row_samples(row, reference)) / statistics.median(row_samples(row, SUBJECT))
    return out


def references(rows: Sequence[dict]) -> List[str]:
    """Runtimes other than forgegrad that some row measured, in first-seen order."""
    seen: List[str] = []
    for r in rows:
        for k, v in (r.get("seconds") or {}).items():
            if k != SUBJECT and v and k not in seen:
                seen.append(k)
    return seen


def load_results(path: str) -> dict:
    """A results.json as {"fingerprint": dict or None, "results": [rows]}.

    Accepts what ``forgegrad bench --report`` writes (any schema) and the bare row list of
    ``python -m forgegrad.bench --json``. Raises ValueError naming the file and what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON ({e})") from None
    if isinstance(data, list):
        data = {"results": data}
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ValueError(f"{path}: expected a results.json written by `forgegrad bench --report` "
                         "(an object with a 'results' list)")
    for i, r in enumerate(data["results"]):
        if not isinstance(r, dict) or "workload" not in r or not isinstance(r.get("seconds"), dict):
            raise ValueError(f"{path}: results[{i}] is not a benchmark row (needs 'workload' and a 'seconds' dict)")
    return {"fingerprint": data.get("fingerprint") or data.get("environment"), "results": data["results"]}


def _cost(row: dict, by: str) -> Optional[List[float]]:
    """The figure compared, per round: forgegrad's seconds, or forgegrad / reference."""
    if by == "time":
        return row_samples(row, SUBJECT)
    s = speedup_samples(row, by)
    return [1.0 / v for v in s] if s else None


def judge(old: Sequence[float], new: Sequence[float], noise: float = DEFAULT_NOISE,
          threshold: float = DEFAULT_THRESHOLD) -> dict:
    """The module docstring's rule on two sample lists of a cost (higher is worse)."""
    if noise < 0 or threshold < 0:
        raise ValueError(f"noise and threshold must be >= 0, got {noise} and {threshold}")
    o, n = band(old), band(new)
    change = n["median"] / o["median"] - 1.0
    if change > threshold and n["median"] > o["max"] * (1 + noise):
        verdict = "regression"
    elif change < -threshold and n["median"] < o["min"] / (1 + noise):
        verdict = "improvement"
    else:
        verdict = "within noise"
    return {"old": o, "new": n, "change": change, "verdict": verdict}


def _references_of(old: dict, new: dict) -> List[str]:
    """The runtimes measured in both rows that are references, not variants of forgegrad."""
    return [ref for ref in references([old])
            if not ref.startswith(SUBJECT) and row_samples(old, ref) and row_samples(new, ref)]


def compare_results(old_rows: Sequence[dict], new_rows: Sequence[dict], by: str = "auto",
                    noise: float = DEFAULT_NOISE, threshold: float = DEFAULT_THRESHOLD) -> List[dict]:
    """One entry per row key in either run, in the new run's order (then rows only the old run has):

        {"suite", "workload", "threads", "verdict": "regression" | "improvement" | "within noise" |
         "drift" | "only in old" | "only in new" | "not measured", "old"/"new": band() of the judged
         cost or None, "change": float or None, "reference": name or None (by="auto": the one whose
         time moved most like forgegrad's), "reference_change": change of its median time,
         "relative_change": change of forgegrad / reference (by="auto" only)}"""
    if not isinstance(by, str) or not by:
        raise TypeError(f"by must be 'auto', 'time' or a reference name, got {by!r}")
    old_map = {row_key(r): r for r in old_rows}
    new_map = {row_key(r): r for r in new_rows}
    keys = list(new_map) + [k for k in old_map if k not in new_map]
    out = []
    for key in keys:
        o, n = old_map.get(key), new_map.get(key)
        entry = {"suite": key[0], "workload": key[1], "threads": key[2], "old": None, "new": None,
                 "change": None, "reference": None, "reference_change": None, "relative_change": None}
        out.append(entry)
        if o is None or n is None:
            entry["verdict"] = "only in new" if o is None else "only in old"
            continue
        co, cn = _cost(o, "time" if by == "auto" else by), _cost(n, "time" if by == "auto" else by)
        if not co or not cn:
            entry["verdict"] = "not measured"
            continue
        entry.update(judge(co, cn, noise, threshold))
        refs = _references_of(o, n) if by in ("auto", "time") else []
        if not refs:
            continue
        if by == "auto":
            # judged against every reference: a move that one of them shares is the machine's (a kernel
            # regression slows forgegrad against all of them); shown: the reference that moved most alike
            rels = {ref: judge(_cost(o, ref), _cost(n, ref), noise, threshold) for ref in refs}
            ref = min(refs, key=lambda r: abs(rels[r]["change"]))
            entry["relative_change"] = rels[ref]["change"]
            if entry["verdict"] != "within noise" and any(j["verdict"] != entry["verdict"] for j in rels.values()):
                entry["verdict"] = "drift"
        else:
            ref = refs[0]
        entry["reference"] = ref
        entry["reference_change"] = statistics.median(row_samples(n, ref)) / statistics.median(row_samples(o, ref)) - 1
    return out


def rule_text(by: str, noise: float, threshold: float) -> str:
    """The rule in one sentence, for the command's summary line and compare.md."""
    base = (f"a regression is a change of more than {threshold:.0%} whose new median is also above the old run's "
            f"slowest round + {noise:.0%} (an improvement likewise below)")
    if by == "auto":
        return (base + ", in forgegrad's time and in its time relative to each reference of the row alike; "
                "a time change a reference shares is 'drift'")
    if by == "time":
        return base + ", in forgegrad's time per call"
    return base + f", in forgegrad's time / {by}'s time in the same round"


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def _num(x: float, by: str) -> str:
    if by not in ("time", "auto"):
        return f"{x:.3f}"
    if x >= 1:
        return f"{x:.2f}s"
    return f"{x * 1e3:.3f}ms" if x >= 1e-3 else f"{x * 1e6:.1f}us"


def _band_text(b: Optional[dict], by: str) -> str:
    return "-" if b is None else f"{_num(b['median'], by)} [{_num(b['min'], by)}-{_num(b['max'], by)}]"


def table_rows(entries: Sequence[dict], by: str = "auto") -> Tuple[List[str], List[List[str]]]:
    """(header, cells) of the comparison table; the band is shown as median [min-max]."""
    unit = "forgegrad time" if by in ("time", "auto") else f"forgegrad/{by} time"
    head = ["suite", "workload", "threads", f"old {unit}", f"new {unit}", "change"]
    if by == "auto":
        head.append("change vs reference")
    if by in ("time", "auto"):
        head.append("reference time change")
    head.append("verdict")
    cells = []
    for e in entries:
        row = [e["suite"], e["workload"], str(e["threads"]), _band_text(e["old"], by), _band_text(e["new"], by),
               _pct(e["change"])]
        if by == "auto":
            row.append(_pct(e.get("relative_change")))
        if by in ("time", "auto"):
            ref = e.get("reference")
            row.append(f"{_pct(e['reference_change'])} ({ref})" if ref else "-")
        row.append(e["verdict"].upper() if e["verdict"] == "regression" else e["verdict"])
        cells.append(row)
    return head, cells


def format_table(entries: Sequence[dict], by: str = "auto") -> str:
    head, cells = table_rows(entries, by)
    lines = [head] + cells
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(entries: Sequence[dict], by: str = "auto") -> List[str]:
    head, cells = table_rows(entries, by)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    return lines


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def counts(entries: Sequence[dict]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for e in entries:
        out[e["verdict"]] = out.get(e["verdict"], 0) + 1
    return out
