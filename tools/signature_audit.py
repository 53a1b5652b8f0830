"""Which parameters torch's functions accept that forgegrad's functions of the same name do not.

Run from the repository root:

    PYTHONPATH=python /work/venv/bin/python tools/signature_audit.py [--names] [--area F|torch|Tensor] [--only NAME]

For every public callable of torch.nn.functional, the torch namespace and torch.Tensor that forgegrad also has
(forgegrad.nn.functional, forgegrad, forgegrad.Tensor), it compares parameter names. torch's parameters come from
``inspect.signature`` where torch has one, else from the signature lines of the docstring (every overload the
docstring lists, e.g. ``sum(input, dim, keepdim=False, *, dtype=None) -> Tensor``). forgegrad's come from
``inspect.signature``; a wrapper ``fn(input, *args, **kwargs)`` over the Tensor method of its name (forgegrad's
``torch.NAME`` functions) is read through to that method.

A torch parameter is
  missing  when forgegrad's function has no parameter of that name and no positional slot for it,
  renamed  when it is positional in torch and forgegrad has a positional slot there under another name (works
           positionally, not by keyword),
  moved    when both take it positionally but at different positions (a positional call means something else),
  opaque   when forgegrad takes ``**kwargs`` that the audit cannot read through.
The summary line gives the counts; ``--names`` lists every gap. Parameters forgegrad refuses on purpose still count
as missing (they raise a clear error; docs/torch_compat.md "Signature gaps" lists them).
"""
from __future__ import annotations

import argparse
import inspect
import keyword
import os
import re
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_c_stub import split_params  # noqa: E402  (the stub generator's top-level comma split)

# torch-internal parameters no user passes
_IGNORED = {"_stacklevel", "_random_samples"}
# torch docstring lines that name a parameter the callable does not take (``Tensor.arctanh_(other)``,
# ``Tensor.div(value)``: torch refuses ``x.div(value=2)``; tests/test_signature_names.py checks that torch refuses each)
_DOC_ERRATA = {("Tensor", "arctanh_"): {"other"}, ("Tensor", "atanh_"): {"other"}}
_DOC_ERRATA.update({("Tensor", n): {"value"} for n in (
    "div", "div_", "divide", "divide_", "mul", "mul_", "multiply", "multiply_", "floor_divide", "floor_divide_",
    "true_divide", "true_divide_")})
_DOC_ERRATA.update({("Tensor", n): {"divisor"} for n in ("fmod", "fmod_", "remainder", "remainder_")})
_DOC_ERRATA.update({("Tensor", n): {"split_size_or_sections"} for n in ("dsplit", "hsplit", "vsplit")})
_DOC_ERRATA.update({
    ("Tensor", "bmm"): {"batch2"}, ("Tensor", "broadcast_to"): {"shape"}, ("Tensor", "dot"): {"other"},
    ("Tensor", "index_copy"): {"tensor2"}, ("Tensor", "index_copy_"): {"tensor"},
    ("Tensor", "masked_scatter"): {"tensor"}, ("Tensor", "matmul"): {"tensor2"}, ("Tensor", "narrow"): {"dimension"},
    ("Tensor", "narrow_copy"): {"dimension"},
    ("Tensor", "orgqr"): {"tau"}, ("Tensor", "ormqr"): {"tau", "other"}, ("Tensor", "take"): {"indices"},
    ("Tensor", "to"): {"other"}, ("Tensor", "type_as"): {"tensor"}, ("Tensor", "where"): {"y"},
    ("torch", "broadcast_to"): {"shape"}, ("torch", "cholesky_inverse"): {"L"}, ("torch", "cholesky_solve"): {"B", "L"},
    ("torch", "orgqr"): {"tau"}, ("torch", "ormqr"): {"tau", "other"}, ("torch", "searchsorted"): {"values"},
    ("torch", "set_num_threads"): {"int"}, ("torch", "set_num_interop_threads"): {"int"},
    ("torch", "result_type"): {"tensor1", "tensor2"}, ("torch", "triangular_solve"): {"b"},
    ("torch", "true_divide"): {"dividend", "divisor"}, ("torch", "unsafe_split"): {"tensor", "split_size_or_sections"},
})
# torch overloads told apart by an argument's type, which forgegrad tells apart the same way (the audit, reading
# names and positions, would call them moved): x.scatter_(dim, index, 1.0) is the value overload in both,
# x.to(torch.float64, True) is to(dtype, non_blocking), torch.repeat_interleave(counts) the repeats-only form
# (tests/test_signature_names.py checks each positional call against torch)
_TYPE_RESOLVED = {("Tensor", "scatter_"): {"value"}, ("Tensor", "to"): {"dtype", "non_blocking", "copy"},
                  ("torch", "repeat_interleave"): {"repeats"}}
# a signature line starts the line (indented lines are examples and reprs) or follows ``.. function::``
_SIG_START = re.compile(r"^(?:\s*\.\. (?:function|method):: )?(?:torch\.(?:nn\.functional\.)?|Tensor\.)?"
                        r"(?P<name>\w+)\(")


def _doc_signature(line: str):
    """(name, argument text) of a docstring signature line ``name(args) -> ...``, else None."""
    m = _SIG_START.match(line)
    if not m:
        return None
    depth = 0
    for i in range(m.end() - 1, len(line)):
        depth += {"(": 1, ")": -1}.get(line[i], 0)
        if depth == 0:
            rest = line[i + 1:].strip()
            if rest and not rest.startswith(("->", ":")):
                return None
            return m.group("name"), line[m.end():i]
    return None


class Params:
    """One signature: positional names in order, keyword-only names, and whether it takes *args / **kwargs."""

    def __init__(self, positional, keyword, var_pos=False, var_kw=False):
        self.positional, self.keyword, self.var_pos, self.var_kw = list(positional), list(keyword), var_pos, var_kw

    @property
    def names(self):
        return set(self.positional) | set(self.keyword)


def _from_doc_args(args: str) -> Params:
    positional, keyword, var_pos, var_kw, kw_only = [], [], False, False, False
    for p in split_params(args):
        p = p.replace("\\", "").split("=")[0].split(":")[0].strip()
        if p in ("", "/"):
            continue
        if p == "*":
            kw_only = True
        elif p.startswith("**"):
            var_kw = True
        elif p.startswith("*"):
            var_pos, kw_only = True, True
        elif re.fullmatch(r"\w+", p):
            (keyword if kw_only else positional).append(p)
    return Params(positional, keyword, var_pos, var_kw)


def _from_signature(sig: inspect.Signature, drop_self: bool) -> Params:
    positional, keyword, var_pos, var_kw = [], [], False, False
    for i, p in enumerate(sig.parameters.values()):
        if drop_self and i == 0 and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append(p.name)
        elif p.kind == p.KEYWORD_ONLY:
            keyword.append(p.name)
        elif p.kind == p.VAR_POSITIONAL:
            var_pos = True
        else:
            var_kw = True
    return Params(positional, keyword, var_pos, var_kw)


def torch_overloads(fn, name: str, method: bool):
    """torch's signatures of ``fn``: inspect's, else every signature line of its docstring naming ``name``."""
    try:
        return [_from_signature(inspect.signature(fn), drop_self=method)]
    except (TypeError, ValueError):
        pass
    out = []
    lines = (getattr(fn, "__doc__", None) or "").splitlines()
    for i, line in enumerate(lines):
        if _SIG_START.match(line) and line.count("(") > line.count(")"):  # a signature wrapped over lines
            line = " ".join([line] + [x.strip() for x in lines[i + 1:i + 6]])
        m = _doc_signature(line)
        if m and m[0] == name:
            p = _from_doc_args(m[1])
            if method and p.positional and p.positional[0] in ("self", "input"):  # a method's doc naming its self
                p.positional.pop(0)
            out.append(p)
    return out


def _method_from_function(fn, name: str):
    """Tensor.NAME's parameters as torch.NAME(input, ...)'s less ``input`` and ``out``: torch's method docstrings
    often list fewer than the method takes (``softmax(dim)`` where it takes ``dtype=``, as torch.softmax)."""
    if fn is None or not callable(fn):
        return []
    out = []
    for p in torch_overloads(fn, name, method=False):
        if p.positional[:1] == ["input"]:
            out.append(Params([n for n in p.positional[1:] if n != "out"], [k for k in p.keyword if k != "out"],
                              p.var_pos, p.var_kw))
    return out


def forgegrad_params(fn, name: str, method: bool, fg):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    p = _from_signature(sig, drop_self=method)
    # forgegrad's Tensor.NAME(self, *args, **kwargs) = forgegrad.NAME(self, *args, **kwargs): read the function
    if method and p.var_pos and p.var_kw and not p.positional and not p.keyword:
        for target in (getattr(fg, name, None), getattr(fg, name.rstrip("_"), None)):
            if callable(target) and not isinstance(target, type):
                try:
                    q = _from_signature(inspect.signature(target), drop_self=True)
                except (TypeError, ValueError):
                    continue
                if not (q.var_pos and q.var_kw and not q.positional):
                    return q
    # forgegrad's torch.NAME(input, *args, **kwargs) = input.NAME(*args, **kwargs): read the method instead
    if not method and p.var_pos and p.var_kw and len(p.positional) <= 1 and not p.keyword:
        target = getattr(fg.Tensor, name, None)
        if callable(target) and target is not fn:
            try:
                q = _from_signature(inspect.signature(target), drop_self=True)
            except (TypeError, ValueError):
                return p
            return Params(p.positional + q.positional, q.keyword, q.var_pos, q.var_kw)
    return p


def compare(torch_sigs, fg_p: Params):
    """{param: kind} for torch's parameters forgegrad does not take by name (kind: missing / renamed / opaque)."""
    gaps = {}
    fg_slots = float("inf") if fg_p.var_pos else len(fg_p.positional)
    for tp in torch_sigs:
        for i, n in enumerate(tp.positional):
            if n in _IGNORED:
                continue
            if keyword.iskeyword(n) and n + "_" in fg_p.names and fg_p.var_kw:
                continue  # ``uniform_(from)``: a Python keyword, taken through **kwargs (``n_`` by name)
            if n in fg_p.names:
                # the same name at another position: a positional call means something else in forgegrad
                if n in fg_p.positional and fg_p.positional.index(n) != i and n not in gaps:
                    gaps[n] = "moved"
                continue
            kind = "renamed" if i < fg_slots else ("opaque" if fg_p.var_kw else "missing")
            if gaps.get(n) != "missing":
                gaps[n] = kind
        for n in tp.keyword:
            if n in fg_p.names or n in _IGNORED:
                continue
            gaps[n] = "opaque" if fg_p.var_kw else "missing"
    return gaps


def _public(ns):
    return [n for n in dir(ns) if not n.startswith("_")]


def audit(areas=("F", "torch", "Tensor"), only=None):
    """[(area, name, {param: kind})] for every shared callable."""
    import torch
    import torch.nn.functional as TF

    import forgegrad as fg
    import forgegrad.nn.functional as FF
    spaces = {"F": (TF, FF, False), "torch": (torch, fg, False), "Tensor": (torch.Tensor, fg.Tensor, True)}
    rows = []
    for area in areas:
        tns, fns, method = spaces[area]
        for name in sorted(_public(tns)):
            if only and name != only:
                continue
            tfn = getattr(tns, name, None)
            if not callable(tfn) or isinstance(tfn, type):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ffn = getattr(fns, name, None)
            if not callable(ffn) or isinstance(ffn, type) or inspect.ismodule(ffn):
                continue
            tsigs = torch_overloads(tfn, name, method)
            if method and not isinstance(getattr(torch, name, None), type):
                tsigs += _method_from_function(getattr(torch, name, None), name)
            fp = forgegrad_params(ffn, name, method, fg)
            if not tsigs or fp is None:
                continue
            gaps = compare(tsigs, fp)
            for p in _DOC_ERRATA.get((area, name), ()):
                gaps.pop(p, None)
            for p in _TYPE_RESOLVED.get((area, name), ()):
                if gaps.get(p) == "moved":
                    gaps.pop(p)
            rows.append((area, name, gaps))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", action="store_true", help="list every gap, not just the counts")
    ap.add_argument("--area", choices=("F", "torch", "Tensor"), action="append", help="only this namespace")
    ap.add_argument("--only", help="only callables of this name")
    args = ap.parse_args(argv)
    rows = audit(tuple(args.area or ("F", "torch", "Tensor")), args.only)
    counts = {"missing": 0, "renamed": 0, "moved": 0, "opaque": 0}
    for area, name, gaps in rows:
        for kind in gaps.values():
            counts[kind] += 1
        if args.names and gaps:
            by_kind = {}
            for p, kind in gaps.items():
                by_kind.setdefault(kind, []).append(p)
            desc = "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in sorted(by_kind.items()))
            prefix = {"F": "F.", "torch": "torch.", "Tensor": "Tensor."}[area]
            print(f"{prefix}{name}: {desc}")
    with_gaps = sum(1 for r in rows if r[2])
    print(f"{len(rows)} callables compared, {with_gaps} with gaps: {counts['missing']} missing, "
          f"{counts['renamed']} renamed (positional only), {counts['moved']} moved, {counts['opaque']} behind **kwargs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
