"""Regenerate python/forgegrad/ops/_special_tables.py from torch's ATen/native/Math.h (the header ships with the torch
wheel): the coefficient arrays of the special functions forgegrad ports, so that forgegrad evaluates torch's
expansions with torch's constants.

    python tools/gen_special_tables.py [path/to/Math.h]
"""
from __future__ import annotations

import pathlib
import re
import sys

OUT = pathlib.Path(__file__).resolve().parents[1] / "python" / "forgegrad" / "ops" / "_special_tables.py"
KEEP = {"calc_ndtri": "NDTRI", "airy_ai_forward": "AIRY", "bessel_j0_forward": "J0", "bessel_j1_forward": "J1",
        "bessel_y0_forward": "Y0", "bessel_y1_forward": "Y1", "modified_bessel_i0_forward": "I0",
        "modified_bessel_i1_forward": "I1", "modified_bessel_k0_forward": "K0", "modified_bessel_k1_forward": "K1",
        "zeta": "ZETA", "lanczos_sum_expg_scaled": "LANCZOS"}
HEADER = '''"""Coefficient tables of torch 2.13's special functions (aten/src/ATen/native/Math.h, from the Cephes Math
Library (3-clause BSD), Boost's Lanczos sum and, for erfcx, Steven G. Johnson's Faddeeva package (MIT)), written by
tools/gen_special_tables.py so that forgegrad evaluates the same expansions as torch. Highest-order coefficient first,
as Math.h's polevl / chbevl read them."""
'''


def _math_h() -> str:
    if len(sys.argv) > 1:
        return pathlib.Path(sys.argv[1]).read_text()
    import torch
    return (pathlib.Path(torch.__file__).parent / "include" / "ATen" / "native" / "Math.h").read_text()


def _number(v: str) -> float:
    return float(re.sub(r"^T\(|\)$|f$", "", v.strip()))


def _arrays(src: str) -> dict:
    """{function: {array name: values}}: each array under the function definition above it."""
    defs = [(m.start(), m.group(1)) for m in re.finditer(
        r"\b(\w+)\s*\(\s*(?:const\s+)?(?:T|scalar_t|double|float)\s+_?\w+\s*(?:,[^)]*)?\)\s*(?:__ubsan\w*\s*)?\{", src)]
    arr = re.compile(r"(?:static\s+)?(?:const\s+)?(?:constexpr\s+)?(?:T|scalar_t|double|float|acc_t)\s+(\w+)\[\w*\]"
                     r"\s*=\s*\{([^}]*)\}")
    out: dict = {}
    for m in arr.finditer(src):
        fn = [n for p, n in defs if p < m.start()][-1]
        body = re.sub(r"/\*.*?\*/", "", m.group(2), flags=re.S)
        out.setdefault(fn, {}).setdefault(m.group(1), [_number(v) for v in body.split(",") if v.strip()])
    return out


def _fmt(vals, indent: int, per_line: int = 4) -> str:
    rows = [", ".join(repr(v) for v in vals[i:i + per_line]) + "," for i in range(0, len(vals), per_line)]
    return ("\n" + " " * indent).join(rows)


def main() -> None:
    src = _math_h()
    arrays = _arrays(src)
    # the scaled K functions share their unscaled forms' coefficients
    assert arrays["scaled_modified_bessel_k0_forward"] == arrays["modified_bessel_k0_forward"]
    assert arrays["scaled_modified_bessel_k1_forward"] == arrays["modified_bessel_k1_forward"]
    lines = [HEADER, "TABLES = {"]
    for fn, prefix in KEEP.items():
        for name, vals in arrays[fn].items():
            key = f"{prefix}_{name.split('_')[-1].upper() if prefix == 'LANCZOS' else name}"
            lines.append(f'    "{key}": (\n        {_fmt(vals, 8)}),')
    lines += ["}", "", "# erfcx_y100: row k is the degree-6 polynomial in t = 2 y100 - (2k + 1) on [k, k + 1),",
              "# constant term first", "ERFCX_Y100 = ("]
    for c, off, expr in re.findall(r"case (\d+): \{\s*T t = 2\*y100 - (\d+);\s*return ([^;]*);", src):
        assert int(off) == 2 * int(c) + 1
        vals = [float(n) for n in re.findall(r"[-+]?\d+\.\d+e[-+]?\d+", expr)]
        assert len(vals) == 7
        lines.append(f"    ({_fmt(vals, 5)}),")
    lines += [")", "", "# _igam_helper_asymptotic_series: d[k][n] of DLMF 8.12 (row k, power n of eta)", "IGAM_D = ("]
    body = re.search(r"d\[25\]\[25\]\s*=\s*\{(.*?)\}\};", src, re.S).group(1) + "}"
    rows = [[float(v) for v in r.split(",") if v.strip()] for r in re.findall(r"\{([^{}]*)\}", body)]
    assert len(rows) == 25 and all(len(r) == 25 for r in rows)
    for r in rows:
        lines.append(f"    ({_fmt(r, 5)}),")
    lines.append(")")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
