"""``forgegrad ops``: the op registry as a table: every op, its devices, and which of the generated
checks (tests/test_op_registry.py) it declares, with the reason for every gap."""
from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser("ops", help="list the registered ops and their generated checks",
                       description="Every op in forgegrad's op registry: the devices it runs on, whether it has an "
                                   "inference kernel, a shape rule, a FLOP rule and an ONNX mapping, and which "
                                   "generated checks cover it (a gap is listed with its reason).")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(run=run)
    return p


def table():
    """One row per op: name, Function class, devices, features and the generated checks (or their gaps)."""
    from ..ops.registry import CHECKS, all_ops
    rows = []
    for op in all_ops():
        checks = {}
        for c in CHECKS:
            if c in op.gaps:
                checks[c] = "gap: " + op.gaps[c]
            elif c in ("forward", "backward", "isa") and op.torch is None:
                checks[c] = "missing: no torch reference"
            elif not op.samples:
                checks[c] = "missing: no samples"
            elif c == "float64" and op.float64 is None:
                checks[c] = "missing: no float64 Function"
            else:
                checks[c] = "yes"
        rows.append({
            "op": op.name, "function": op.function.__qualname__, "devices": list(op.devices),
            "inference_kernel": sorted(op.inference), "meta": op.meta is not None, "flops": op.flops is not None,
            "onnx": op.onnx is not None or _has_mapping(op), "checks": checks,
        })
    return rows


def _has_mapping(op) -> bool:
    try:
        return op.onnx_mapping() is not None
    except ImportError:  # onnx is an optional extra
        return False


def run(args, log=print):
    from ..ops.registry import CHECKS
    rows = table()
    if args.json:
        log(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["op"]) for r in rows)
    head = f"{'op':{width}s}  {'devices':14s} {'infer':5s} {'onnx':4s}  " + " ".join(f"{c:8s}" for c in CHECKS)
    log(head)
    log("-" * len(head))
    gaps = []
    for r in rows:
        cells = []
        for c in CHECKS:
            v = r["checks"][c]
            cells.append(f"{'yes' if v == 'yes' else v.split(':')[0]:8s}")
            if v != "yes":
                gaps.append(f"  {r['op']}/{c}: {v}")
        log(f"{r['op']:{width}s}  {','.join(r['devices']):14s} {'yes' if r['inference_kernel'] else '-':5s} "
            f"{'yes' if r['onnx'] else 'no':4s}  " + " ".join(cells))
    log(f"\n{len(rows)} ops; checks run by `python -m pytest tests/test_op_registry.py` (a coverage table "
        "with the results ends its output).")
    if gaps:
        log("gaps and missing checks:")
        for g in gaps:
            log(g)
    return 0
