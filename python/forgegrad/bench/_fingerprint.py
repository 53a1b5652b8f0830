"""The machine fingerprint stored in every results.json and printed at the top of every report.

A benchmark figure means little without the machine and software it was taken on: the CPU and
how many cores the process may use, the SIMD path forgegrad's kernels chose (and whether it was
forced), the AMX / VNNI / BF16 units the CPU has, every environment variable that changes a
runtime's threading or kernel choice, the versions of forgegrad and of each reference (numpy with
the BLAS threadpoolctl finds behind it), the command line, the git commit and the time.
Everything here is read without side effects; a piece that cannot be read is recorded as None.
"""
from __future__ import annotations

import datetime
import importlib
import importlib.util
import os
import platform
import subprocess
import sys
from typing import Dict, List, Optional

# /proc/cpuinfo flags worth naming in a report: the matrix / dot-product units that decide which
# kernels a runtime can use (forgegrad, torch's oneDNN and onnxruntime's MLAS pick by them).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8")
# environment variables that change how a runtime threads or which kernels it picks
ENV_PREFIXES = ("OMP_", "MKL_", "OPENBLAS", "GOTO", "KMP_", "FORGEGRAD_", "ORT_", "TORCH_", "ONEDNN_", "DNNL_")
ENV_NAMES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES")
REFERENCES = ("numpy", "torch", "onnxruntime", "onnx", "transformers")


def _cpuinfo(path: str = "/proc/cpuinfo") -> Dict[str, str]:
    """The first processor block of /proc/cpuinfo as {key: value} ({} where there is none)."""
    info: Dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if info:
                        break
                    continue
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu(path: str = "/proc/cpuinfo") -> dict:
    """CPU model, logical cores (all and usable by this process) and the CPU_FLAGS it has."""
    info = _cpuinfo(path)
    flags = set(info.get("flags", "").split())
    try:
        usable: Optional[int] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        usable = None
    return {
        "model": info.get("model name") or platform.processor() or None,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "flags": {f: (f in flags) for f in CPU_FLAGS} if flags else None,
        "amx": ("amx_tile" in flags) if flags else None,
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}) if flags else None,
    }


def _version(name: str) -> Optional[str]:
    """Installed version of a distribution (without importing it), or None."""
    try:
        from importlib import metadata
        return metadata.version(name)
    except Exception:  # PackageNotFoundError, or broken metadata
        return None


def _runtime_version(name: str) -> Optional[str]:
    """The version of a reference runtime, read from its package metadata (importing torch or
    onnxruntime just for this would take seconds). A module blocked in sys.modules (None there, as
    tests do to simulate a missing runtime) is reported absent, like the benchmarks report it."""
    if name in sys.modules and sys.modules[name] is None:
        return None
    mod = sys.modules.get(name)
    if mod is not None and getattr(mod, "__version__", None):
        return str(mod.__version__)
    v = _version(name)
    if v is None:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        return "installed" if found else None
    return v


def versions() -> Dict[str, Optional[str]]:
    """forgegrad and each reference's version (None: not installed)."""
    from .._version import __version__
    out: Dict[str, Optional[str]] = {"forgegrad": __version__, "python": platform.python_version()}
    for name in REFERENCES:
        out[name] = _runtime_version(name)
    return out


def blas() -> List[dict]:
    """numpy's BLAS (and any other native thread pool loaded) as threadpoolctl reports it."""
    try:
        import threadpoolctl
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "architecture", "prefix")
    return [{k: p.get(k) for k in keep} for p in threadpoolctl.threadpool_info()]


def thread_env() -> Dict[str, str]:
    """The environment variables that set threads or kernel choice, as they are now."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}


def forgegrad_runtime() -> dict:
    """forgegrad's SIMD path (detected, active, forced by FORGEGRAD_SIMD?) and its thread count."""
    try:
        from .. import _runtime
        info = _runtime.cpu_info()
    except Exception as e:  # the extension failed to load: say so instead of failing the report
        return {"error": f"{type(e).__name__}: {e}"}
    return {k: info.get(k) for k in ("detected_isa", "active_isa", "FORGEGRAD_SIMD", "num_threads",
                                     "threads_backend", "cuda_built")}


def git_commit(start: Optional[str] = None) -> Optional[dict]:
    """{"commit", "dirty"} of the git checkout forgegrad is imported from, or None (an installed
    wheel, or no git)."""
    where = start or os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def command_line() -> str:
    """The command as typed: `forgegrad bench ...` for the console script, `python -m ...` for -m runs."""
    argv = list(sys.argv)
    if argv and os.path.basename(argv[0]) == "__main__.py" and getattr(sys, "orig_argv", None):
        argv = ["python"] + list(sys.orig_argv[1:])
    elif argv:
        argv[0] = os.path.basename(argv[0]) or "python"
    return " ".join(argv)


def fingerprint() -> dict:
    """Everything above in one JSON-ready dict."""
    return {
        "time_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command_line(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": cpu(),
        "forgegrad_runtime": forgegrad_runtime(),
        "versions": versions(),
        "blas": blas(),
        "thread_env": thread_env(),
        "git": git_commit(),
    }


def summary_lines(fp: dict) -> List[str]:
    """The fingerprint as markdown bullet lines for a report (tolerates missing keys: an older
    results.json may lack some)."""
    c, rt, v = fp.get("cpu") or {}, fp.get("forgegrad_runtime") or {}, fp.get("versions") or {}
    flags = c.get("flags") or {}
    units = ", ".join(f for f, on in flags.items() if on) or "unknown"
    cores = f"{c.get('logical_cores')} logical"
    if c.get("usable_cores") is not None and c.get("usable_cores") != c.get("logical_cores"):
        cores += f", {c.get('usable_cores')} usable by this process"
    isa = f"{rt.get('active_isa', '?')} (detected {rt.get('detected_isa', '?')}"
    isa += f", forced by FORGEGRAD_SIMD={rt['FORGEGRAD_SIMD']})" if rt.get("FORGEGRAD_SIMD") else ")"
    blas_libs = "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture') or '?'}, "
                          f"{b.get('num_threads')} threads)" for b in fp.get("blas") or []
                          if b.get("user_api") == "blas") or "not reported (threadpoolctl absent)"
    vers = ", ".join(f"{k} {v[k] if v.get(k) else 'absent'}" for k in ("forgegrad", "python") + REFERENCES)
    git = fp.get("git")
    git_text = (f"{git['commit'][:12]}{' (uncommitted changes)' if git.get('dirty') else ''}" if git
                else "not a git checkout")
    env = fp.get("thread_env") or {}
    return [
        f"- **CPU:** {c.get('model') or 'unknown'}; {cores} cores; {fp.get('platform', '?')}",
        f"- **CPU units:** {units}; AMX {'yes' if c.get('amx') else 'no'}, VNNI {'yes' if c.get('vnni') else 'no'}",
        f"- **forgegrad SIMD path:** {isa}; {rt.get('num_threads', '?')} threads by default",
        f"- **Versions:** {vers}",
        f"- **numpy BLAS:** {blas_libs}",
        "- **Thread / kernel environment:** " + (", ".join(f"`{k}={v}`" for k, v in env.items()) or "none set"),
        f"- **Command:** `{fp.get('command', '?')}`",
        f"- **Commit:** {git_text}; **time:** {fp.get('time_utc', '?')}",
    ]
