#!/usr/bin/env python3
"""Write python/forgegrad/_C.pyi, the type stub of the compiled module forgegrad._C.

pybind11 records each function's signature as the first line of its docstring; this script reads
them from the built module (``PYTHONPATH=python python tools/gen_c_stub.py`` after
tools/dev_build.sh) and declares each submodule (runtime, gemm, conv, ...) as a class of static
methods, which is how `_C.gemm.matmul(...)` type-checks from a single stub file (a .pyi cannot
declare submodules of an extension module otherwise). The CUDA kernels exist only in a CUDA
build; their declarations are written by hand in the stub (see CUDA_BEGIN) and kept as they are;
tests/test_c_stub.py checks them against the module when it is a CUDA build.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUB = os.path.join(ROOT, "python", "forgegrad", "_C.pyi")
WIDTH = 120
# pybind11's spelling of the Python types its int / float casters accept, shortened in the stub
ALIASES = {"typing.SupportsInt | typing.SupportsIndex": "_Int", "typing.SupportsFloat | typing.SupportsIndex": "_Float"}

# The CUDA kernels of cpp/bindings/bind_cuda.cpp (FORGEGRAD_WITH_CUDA) are absent from CPU-only
# builds, so their declarations are written by hand in the stub, between these two lines, and
# carried over unchanged on every regeneration.
CUDA_BEGIN = "    # CUDA build only (cpp/bindings/bind_cuda.cpp), written by hand and kept by tools/gen_c_stub.py"
CUDA_END = "    # end of CUDA build only"
CUDA_ONLY_NAMES = ("DeviceArray", "_fault_for_tests", "adam_step", "cast", "cat", "current_device", "empty_cache",
                   "launch_blocking", "memory_stats", "relu_backward", "relu_forward", "reset_peak_memory_stats",
                   "set_device", "sgemm", "strided_assign", "strided_copy", "sum_to_shape", "synchronize")

_SIG = re.compile(r"^(\w+)\((.*)\)\s*->\s*(.+)$")
_TRIPLE = '"' * 3


def split_params(text: str):
    """Top-level comma split of a pybind11 parameter list (brackets and quotes nest)."""
    out, depth, cur, quote = [], 0, "", None
    for ch in text:
        if quote:
            cur += ch
            quote = None if ch == quote else quote
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def parse_signature(doc: str):
    """(name, [(param, annotation or None, has_default)], return type) from the first docstring
    line of a pybind11 function ("*" and "/" appear as params); None when there is no signature."""
    first = (doc or "").strip().splitlines()
    m = _SIG.match(first[0]) if first else None
    if not m:
        return None
    params = []
    for p in split_params(m.group(2)):
        if p in ("*", "/"):
            params.append((p, None, False))
            continue
        head, _, default = p.partition("=")
        name, _, ann = head.partition(":")
        params.append((name.strip(), ann.strip() or None, bool(default.strip())))
    return m.group(1), params, m.group(3).strip()


def _short(annotation: str) -> str:
    for long, short in ALIASES.items():
        annotation = annotation.replace(long, short)
    return annotation.replace("forgegrad._C.", "")


def _function(fn, indent: str) -> str:
    sig = parse_signature(fn.__doc__)
    if sig is None:
        raise SystemExit(f"{fn.__module__}.{fn.__name__}: no pybind11 signature in its docstring")
    name, params, ret = sig
    args = [p if p in ("*", "/") else (f"{p}: {_short(a)}" if a else p) + (" = ..." if d else "")
            for p, a, d in params]
    head = f"{indent}def {name}({', '.join(args)}) -> {_short(ret)}:"
    if len(head) + 4 > WIDTH:  # wrapped, continuation lines aligned under the first parameter
        lines, cur = [], f"{indent}def {name}("
        pad = " " * len(cur)
        for i, a in enumerate(args):
            piece = a + (", " if i + 1 < len(args) else f") -> {_short(ret)}:")
            if len(cur) + len(piece.rstrip()) > WIDTH and cur.strip():
                lines.append(cur.rstrip())
                cur = pad
            cur += piece
        head = "\n".join(lines + [cur])
    text = f"{indent}@staticmethod\n{head}"
    body = " ".join(fn.__doc__.strip().splitlines()[1:]).strip().replace(_TRIPLE, "'''")
    if not body:
        return text + " ...\n"
    doc = textwrap.wrap(body, WIDTH - len(indent) - 8)
    if len(doc) == 1:
        return f"{text}\n{indent}    {_TRIPLE}{doc[0]}{_TRIPLE}\n{indent}    ...\n"
    inner = "".join(f"{indent}    {line}\n" for line in doc[1:])
    return f"{text}\n{indent}    {_TRIPLE}{doc[0]}\n{inner}{indent}    {_TRIPLE}\n{indent}    ...\n"


def _wrapped(start: str, args, end: str) -> str:
    """start + args joined + end, wrapped at WIDTH with continuation lines under the first parameter."""
    one = start + ", ".join(args) + end
    if len(one) <= WIDTH:
        return one
    lines, cur = [], start
    for i, a in enumerate(args):
        piece = a + (", " if i + 1 < len(args) else end)
        if len(cur) + len(piece.rstrip()) > WIDTH and cur.strip() != start.strip():
            lines.append(cur.rstrip())
            cur = " " * len(start)
        cur += piece
    return "\n".join(lines + [cur])


def _class(cls, indent: str) -> str:
    """A pybind11 class: its constructor, methods, static methods and properties; or an exception
    type (a subclass of a Python exception), declared with its base."""
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return f"{indent}class {cls.__name__}({cls.__mro__[1].__name__}): ..."
    out = [f"{indent}class {cls.__name__}:"]
    doc = (cls.__doc__ or "").strip()
    if doc:
        out.append(f"{indent}    {_TRIPLE}{doc}{_TRIPLE}")
    for name in sorted(n for n in vars(cls) if n == "__init__" or not n.startswith("_") or n in ("__len__",
                                                                                              "__array__")):
        obj = vars(cls)[name]
        kind = type(obj).__name__
        if kind == "property":
            m = re.search(r"->\s*(.+)$", (obj.fget.__doc__ or "").strip().splitlines()[0])
            ret = _short(m.group(1)) if m else "object"
            out.append(f"{indent}    @property\n{indent}    def {name}(self) -> {ret}: ...")
            continue
        fn = getattr(cls, name)
        sig = parse_signature(fn.__doc__)
        if sig is None:
            raise SystemExit(f"{cls.__qualname__}.{name}: no pybind11 signature in its docstring")
        _, params, ret = sig
        static = kind == "staticmethod" or not params or params[0][0] != "self"
        args = [p if p in ("*", "/") else (p if p == "self" else (f"{p}: {_short(a)}" if a else p)) +
                (" = ..." if d else "") for p, a, d in params]
        out.append((f"{indent}    @staticmethod\n" if static else "") +
                   _wrapped(f"{indent}    def {name}(", args, f") -> {_short(ret)}: ..."))
    return "\n".join(out)


def cuda_block(stub_text: str) -> str:
    """The hand-written CUDA-only declarations of the current stub, marker lines included."""
    lines = stub_text.splitlines()
    try:
        i, j = lines.index(CUDA_BEGIN), lines.index(CUDA_END)
    except ValueError:
        raise SystemExit(f"{STUB}: the CUDA-only block (between {CUDA_BEGIN.strip()!r} and {CUDA_END.strip()!r}) "
                         "is missing; restore it from git") from None
    return "\n".join(lines[i:j + 1])


def generate(module, stub_text: str) -> str:
    """The stub text for module (forgegrad._C); stub_text: the current stub (its CUDA-only block)."""
    lines = [_TRIPLE + "Type stub of forgegrad._C (C++ kernels, pybind11), written by tools/gen_c_stub.py: do not",
             "edit by hand; rerun it after changing a binding (tests/test_c_stub.py checks that it is current).",
             "Each submodule is declared as a class of static methods.", _TRIPLE,
             "import collections.abc", "import typing", "", "import numpy", "",
             "_Int = typing.SupportsInt | typing.SupportsIndex",
             "_Float = typing.SupportsFloat | typing.SupportsIndex", "",
             "__version__: str", ""]
    for sub_name in sorted(n for n in dir(module) if isinstance(getattr(module, n), types.ModuleType)):
        sub = getattr(module, sub_name)
        lines.append(f"class {sub_name}:")
        doc = (sub.__doc__ or "").strip()
        if doc:
            lines.append(f"    {_TRIPLE}{doc}{_TRIPLE}")
        members = sorted(n for n in dir(sub) if not n.startswith("__"))
        if sub_name == "cuda":  # written by hand (cuda_block), the same in CPU-only and CUDA builds
            members = [n for n in members if n not in CUDA_ONLY_NAMES]
        for name in members:
            obj = getattr(sub, name)
            if isinstance(obj, (bool, int, float, str)):
                lines.append(f"    {name}: {type(obj).__name__}")
            elif type(obj).__name__ == "builtin_function_or_method":
                lines.append(_function(obj, "    ").rstrip("\n"))
            elif isinstance(obj, type):
                lines.append(_class(obj, "    "))
            else:
                raise SystemExit(f"_C.{sub_name}.{name}: {type(obj).__name__} is not handled; extend gen_c_stub.py")
        if sub_name == "cuda":
            lines.append(cuda_block(stub_text))
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the stub differs instead of writing it")
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.join(ROOT, "python"))
    from forgegrad import _C
    with open(STUB, encoding="utf-8") as f:
        current = f.read()
    text = generate(_C, current)
    if args.check:
        same = current == text
        print("up to date" if same else f"{STUB} is out of date: run tools/gen_c_stub.py")
        return 0 if same else 1
    with open(STUB, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {STUB}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
