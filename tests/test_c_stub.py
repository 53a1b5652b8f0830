"""python/forgegrad/_C.pyi (written by tools/gen_c_stub.py) declares every function, constant and
class of every forgegrad._C submodule, with the parameter names pybind11 reports, and nothing
that the module does not have (the CUDA kernels only exist in a CUDA build), so the stub cannot go
stale silently; and it ships in the wheel."""
import ast
import fnmatch
import importlib.util
import os
import shutil
import subprocess
import types

import pytest

import forgegrad as fg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUB = os.path.join(ROOT, "python", "forgegrad", "_C.pyi")
FIX = "regenerate it: PYTHONPATH=python python tools/gen_c_stub.py"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_c_stub", os.path.join(ROOT, "tools", "gen_c_stub.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _generator()


def _params(fn: ast.FunctionDef):
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args]
    if a.kwonlyargs:
        names += ["*"] + [x.arg for x in a.kwonlyargs]
    return [n for n in names if n != "self"]


def _stub():
    """{submodule: {member: parameter names (functions) or None (constants, classes)}}."""
    with open(STUB, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    out = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        members = {}
        for item in node.body:
            if isinstance(item, ast.FunctionDef):
                members[item.name] = _params(item)
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                members[item.target.id] = None
            elif isinstance(item, ast.ClassDef):
                members[item.name] = None
        out[node.name] = members
    return out


def _runtime():
    C = fg._C
    return {n: getattr(C, n) for n in dir(C) if isinstance(getattr(C, n), types.ModuleType)}


def test_stub_declares_every_submodule_and_member():
    stub, runtime = _stub(), _runtime()
    assert sorted(stub) == sorted(runtime), f"_C submodules {sorted(runtime)} vs stub classes {sorted(stub)}; {FIX}"
    missing = [f"{s}.{n}" for s, mod in runtime.items() for n in dir(mod)
               if not n.startswith("__") and n not in stub[s]]
    assert not missing, f"_C.pyi lacks {missing}; {FIX}"


def test_stub_declares_nothing_the_module_lacks():
    stub, runtime = _stub(), _runtime()
    cuda_only = set() if fg._C.cuda.built else set(GEN.CUDA_ONLY_NAMES)
    extra = [f"{s}.{n}" for s, members in stub.items() for n in members
             if not hasattr(runtime[s], n) and not (s == "cuda" and n in cuda_only)
             and not (s in GEN.CUDA_ONLY_SUBMODULES and not fg._C.cuda.built)]
    assert not extra, f"_C.pyi declares {extra}, which forgegrad._C does not have; {FIX}"


def test_stub_parameter_names_match_the_bindings():
    stub, runtime = _stub(), _runtime()
    checked = 0
    for s, mod in runtime.items():
        for n in dir(mod):
            obj = getattr(mod, n)
            if n.startswith("__") or type(obj).__name__ != "builtin_function_or_method":
                continue
            sig = GEN.parse_signature(obj.__doc__)
            assert sig is not None, f"_C.{s}.{n} has no pybind11 signature line"
            want = [p for p, _, _ in sig[1] if p != "/"]
            assert stub[s][n] == want, f"_C.{s}.{n}: stub parameters {stub[s][n]}, binding {want}; {FIX}"
            checked += 1
    assert checked >= 30  # the walk reached the functions (37 in a CPU-only build), not an empty module


def test_signature_parser_handles_nesting_defaults_and_keyword_only():
    name, params, ret = GEN.parse_signature(
        "f(a: tuple[int, int], b: str = 'x, y', *, c: collections.abc.Sequence | None = None) -> list[float]\n\ndoc")
    assert (name, ret) == ("f", "list[float]")
    assert params == [("a", "tuple[int, int]", False), ("b", "str", True), ("*", None, False),
                      ("c", "collections.abc.Sequence | None", True)]
    assert GEN.parse_signature("no signature here") is None


def test_stub_ships_in_the_wheel():
    # scikit-build-core copies every file under wheel.packages that .gitignore and wheel.exclude
    # do not exclude (scikit_build_core.build._pathutil.packages_to_file_mapping)
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        skb = tomllib.load(f)["tool"]["scikit-build"]
    rel = os.path.relpath(STUB, ROOT).replace(os.sep, "/")
    packages = skb.get("wheel.packages") or skb.get("wheel", {}).get("packages", [])
    assert any(rel.startswith(p.rstrip("/") + "/") for p in packages), (rel, packages)
    excludes = skb.get("wheel.exclude") or skb.get("wheel", {}).get("exclude", [])
    assert not [p for p in excludes if fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(os.path.basename(rel), p)]
    if shutil.which("git") is None:
        return
    ignored = subprocess.run(["git", "check-ignore", "-q", rel], cwd=ROOT, capture_output=True)
    # 0: ignored, 1: not ignored, 128: not a git checkout (e.g. an unpacked sdist: nothing to check)
    assert ignored.returncode != 0, f"{rel} is git-ignored, so scikit-build-core would leave it out of the wheel"
