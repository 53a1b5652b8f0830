"""The fuzz child: ``python tests/fuzz/fuzz_worker.py CORPUS_PATH`` reads one case (JSON) a line on
stdin, runs it and answers one JSON line ``{"ok", "outcome", "detail"}``. A crash or a hang ends the
process, which the parent (fuzz_util.Worker) sees as a failed case; that is why the cases run here.

Outcomes: ``error`` (a clear exception: an allowed type with a message), ``equal`` (the result equals
the reference), ``unverified`` (the call returned and no reference exists: torch rejects the inputs,
or the mutation changed a value to another valid one), or a failure: ``bad-error`` (an exception of
another type, or with an empty message), ``mismatch`` (silent wrong result), ``accepted`` (a value of
a type the parameter does not take was used).
"""
from __future__ import annotations

import inspect
import json
import os
import re
import sys
import traceback
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fuzz_cases as C  # noqa: E402
import fuzz_decompositions  # noqa: E402
import fuzz_references as R  # noqa: E402
import fuzz_mutate as M  # noqa: E402

import forgegrad as fg  # noqa: E402

ALLOWED = (TypeError, ValueError, IndexError, MemoryError, RuntimeError, NotImplementedError, OverflowError)


# bindings whose contract is to return None for inputs they leave to the general path (a plan: to the
# Python steps, for any other dtype, layout or shape)
DECLINE_WITH_NONE = {"c:gemm.bmm_plain", "c:plan.plan_linear", "c:plan.plan_conv"}
# answers that follow the machine's load by design (threads_for backs off to 1 thread on a busy machine):
# two calls a moment apart may differ, so only "returns or raises cleanly" is checked
LOAD_DEPENDENT = {"c:runtime._threads_for"}
# ops that read their input's storage (the memory its view addresses, as torch's as_strided): the reference's copies
# are other storages, so an input a mutation turned into a view of more memory has no reference
STORAGE_DEPENDENT = {"op:as_strided"}


class Failure(Exception):
    def __init__(self, outcome, detail):
        super().__init__(detail)
        self.outcome = outcome


def _outcome_of_error(e):
    if isinstance(e, ALLOWED) and str(e).strip():
        return "error", f"{type(e).__name__}: {str(e)[:200]}"
    if type(e) is MemoryError and M.SANITIZED:
        # past ASan's soft RSS limit every malloc fails, a small one (CPython's, with no message) too
        return "error", "MemoryError (no message: the RSS limit under ASan)"
    tb = "".join(traceback.format_exception(e)[-3:])
    raise Failure("bad-error", f"{type(e).__name__}: {e!r}\n{tb}")


def _close(got, want, rtol, atol, what):
    if isinstance(want, (tuple, list)) and not hasattr(want, "_fields"):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            raise Failure("mismatch", f"{what}: {type(got).__name__} vs reference {type(want).__name__} of {len(want)}")
        for k, (g, w) in enumerate(zip(got, want)):
            _close(g, w, rtol, atol, f"{what}[{k}]")
        return
    if isinstance(want, fg.Tensor):
        want = want._data
    if isinstance(got, fg.Tensor):
        got = got._data
    if hasattr(want, "detach"):
        want = want.detach().numpy()
    if want is None or isinstance(want, (str, bool)):
        if got != want:
            raise Failure("mismatch", f"{what}: {got!r} vs reference {want!r}")
        return
    if not isinstance(want, (np.ndarray, np.generic, int, float)):
        return  # an object the kernel hands back (saved state): compared through the arrays it holds
    g = np.asarray(got)
    w = np.asarray(want)
    if g.shape != w.shape:
        raise Failure("mismatch", f"{what}: shape {g.shape} vs reference {w.shape}")
    # in float64 blocks: a huge valid case's result (2**28 values) compared at once took ~8 float64
    # copies of it, more memory and time than the op and its reference together
    g, w = g.reshape(-1), w.reshape(-1)
    scale = 1.0
    for i in range(0, w.size, _BLOCK):
        w64 = np.abs(w[i:i + _BLOCK].astype(np.float64))
        scale = max(scale, float(np.max(w64[np.isfinite(w64)], initial=1.0)))
    atol = atol * max(1.0, scale)
    nbad, bad_got, bad_want = 0, [], []
    for i in range(0, w.size, _BLOCK):
        g64, w64 = g[i:i + _BLOCK].astype(np.float64), w[i:i + _BLOCK].astype(np.float64)
        bad = ~np.isclose(g64, w64, rtol=rtol, atol=atol, equal_nan=True)
        if bad.any():
            nbad += int(bad.sum())
            bad_got += list(g64[bad][:3 - len(bad_got)])
            bad_want += list(w64[bad][:3 - len(bad_want)])
    if nbad:
        raise Failure("mismatch", f"{what}: {nbad} of {w.size} values differ, e.g. "
                                  f"{np.array(bad_got)} vs reference {np.array(bad_want)}")


_BLOCK = 1 << 22


# ---- ops ------------------------------------------------------------------------------------------
def run_op(case, rng):
    import torch
    op = fg.ops.get(case["target"][3:])
    samples = op.samples()
    s = samples[case["base"] % len(samples)]
    args, kwargs = [C._copy(a) for a in s.args], {k: C._copy(v) for k, v in s.kwargs.items()}
    M.BOUNDED_HUGE = True
    try:
        aliases, classes = M.apply(case["mutations"], args, kwargs, rng)
    finally:
        M.BOUNDED_HUGE = False
    raw = case.get("raw", False)
    try:
        fg_args = [a if raw or not isinstance(a, np.ndarray) else fg.tensor(a) for a in args]
        got = op(*fg_args, **kwargs)
    except Exception as e:  # noqa: BLE001  (sorted by _outcome_of_error)
        return _outcome_of_error(e)
    if case.get("target") in STORAGE_DEPENDENT and args and isinstance(args[0], np.ndarray) and (
            args[0].base is not None or not args[0].flags.c_contiguous):
        return "unverified", "the input is a view of other memory, which this op reads (torch's copy would not)"
    tkw = s.torch_kwargs if getattr(s, "torch_kwargs", None) is not None else kwargs
    try:
        # integer data as forgegrad stores it (int64: a tensor of uint8 negates to -255, not 1)
        t_args = [torch.from_numpy(R.as_stored(a, raw)) if isinstance(a, np.ndarray) else a for a in args]
        # aliasing the same Tensor object on the torch side too
        for (ci, ki), (cj, kj) in aliases:
            if ci is args and cj is args and args[ki] is args[kj]:
                t_args[kj] = t_args[ki]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = op.torch(torch, *t_args, **tkw)
    except Exception as e:  # noqa: BLE001  torch rejects these inputs: no reference
        # torch's TypeError on a replaced scalar: a value of a type the parameter does not take
        if any(c == "wrong" or (c == "value" and isinstance(e, TypeError)) for c, _ in classes):
            raise Failure("accepted", f"{'; '.join(d for _, d in classes)} was accepted (torch: "
                                      f"{type(e).__name__}: {str(e)[:120]})")
        return "unverified", f"torch rejects: {type(e).__name__}"
    rtol, atol = op.tol
    if any(isinstance(a, np.ndarray) and a.dtype == np.float16 for a in args):
        rtol = max(rtol, 4e-3)  # torch computes in half precision then
    want = R.limits(op.name, args, want)
    try:
        _close(got, want, max(rtol, 1e-4), max(atol, 1e-5), f"op {op.name}")
    except Failure:
        # torch computing in float32 may overflow (or lose digits) where forgegrad does not (e.g. the
        # variance of 3e38s): a result equal to torch in float64 is right too
        want64 = R.torch64(op, torch, args, aliases, tkw)
        if want64 is None:
            raise
        want64 = R.float32_range(got, R.limits(op.name, args, want64))
        try:
            _close(got, want64, max(rtol, 1e-4), max(atol, 1e-5), f"op {op.name} (float64)")
        except Failure:
            failure = f"{sys.exc_info()[1]}; in float32 torch differs too"
            # factors that are not unique (degenerate singular vectors, rank-deficient or non-finite QR): by
            # what defines them
            judged = fuzz_decompositions.check(op.name, args, kwargs, got, want, Failure)
            if judged is not None:
                return judged
            wide = R.torch_wide_ints(op, torch, got, args, tkw)
            if wide is not None:
                try:
                    _close(got, wide, max(rtol, 1e-4), max(atol, 1e-5), f"op {op.name} (float64, int64 inputs)")
                    return "equal", "torch computes the narrow integers' products in their own dtype (wrapping)"
                except Failure:
                    pass
            unfolded = R.unfolded_affine(op, torch, args, tkw)
            if unfolded is not None:
                try:
                    _close(got, R.float32_range(got, unfolded), max(rtol, 1e-4), max(atol, 1e-5),
                           f"op {op.name} (float64, x_hat * weight + bias)")
                    return "equal", "an infinite weight or bias: against x_hat * weight + bias"
                except Failure:
                    raise Failure("mismatch", failure) from None
            masks = R.partial_sum_overflow(op.name, args, tkw)
            if masks is None:
                raise Failure("mismatch", failure) from None
            try:
                _close(got, R.accept_overflow(got, want64, masks), max(rtol, 1e-4), max(atol, 1e-5),
                       f"op {op.name} (float64, overflowing sums aside)")
            except Failure:
                raise Failure("mismatch", failure) from None
    return "equal", ""


# ---- kernels and bindings ---------------------------------------------------------------------------
def _outputs(pre, post):
    """Positions (slot keys) of the arrays a call wrote."""
    out = set()
    for k, (a, b) in enumerate(zip(pre, post)):
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape:
            if not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
                out.add(k)
    return out


def _flat_arrays(args, kwargs):
    slots = M.array_slots(args) + [(kwargs, k) for k in sorted(kwargs) if isinstance(kwargs[k], np.ndarray)]
    return slots


def _optional_params(fn):
    """Positions and names of fn's parameters that take None (Python functions only): those defaulting to None
    and those annotated ``Optional[...]`` / ``... | None`` (check_softcap's softcap: a required argument, None
    meaning no cap)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a pybind11 function: its None-able parameters take `object`
        return set()
    return {x for i, p in enumerate(params) if p.default is None or _none_annotated(p.annotation)
            for x in (i, p.name)}


def _none_annotated(annotation) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)  # (postponed annotations are str)
    return annotation is not inspect.Parameter.empty and ("Optional[" in text or re.search(r"\|\s*None\b", text)
                                                          is not None or re.search(r"\bNone\s*\|", text) is not None)


def _wrong(classes):
    return "; ".join(d for c, d in classes if c == "wrong")


def _sharing_groups(arrays):
    """Groups (index lists, 2 or more) of the arrays that share memory."""
    groups, placed = [], set()
    for i, a in enumerate(arrays):
        if i in placed:
            continue
        g = [i] + [j for j in range(i + 1, len(arrays)) if j not in placed and np.may_share_memory(a, arrays[j])]
        if len(g) > 1:
            groups.append(g)
            placed |= set(g)
    return groups


def run_function(case, rng, fn, bases):
    base_args, base_kwargs = bases[case["base"] % len(bases)]
    args, kwargs = [C._copy(a) for a in base_args], {k: C._copy(v) for k, v in base_kwargs.items()}
    aliases, classes = M.apply(case["mutations"], args, kwargs, rng, _optional_params(fn))
    # the reference: the same values as plain arrays, every argument its own copy
    try:
        ref_args = [M.canonical(a, b) for a, b in zip(args, base_args)]
        ref_kwargs = {k: M.canonical(v, base_kwargs.get(k)) for k, v in kwargs.items()}
        ref_ok = all(c == "same" for c, _ in classes)
    except M.NoReference as e:
        ref_args, ref_ok = None, False
        why = str(e)
    ref_slots = _flat_arrays(ref_args, ref_kwargs) if ref_args is not None else []
    ref_pre = [c[k].copy() for c, k in ref_slots]
    ref_result = ref_error = None
    if ref_args is not None:
        try:
            ref_result = fn(*ref_args, **ref_kwargs)
        except Exception as e:  # noqa: BLE001
            ref_error = e
    slots = _flat_arrays(args, kwargs)
    try:
        result = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001
        return _outcome_of_error(e)
    if any(c == "wrong" for c, _ in classes):
        raise Failure("accepted", f"{_wrong(classes)} was accepted")
    if ref_args is None:
        return "unverified", why
    if not ref_ok:
        return "unverified", "a bad value of the right type was accepted"
    if ref_error is not None:
        raise Failure("mismatch", f"the mutated call returned but the plain call raises "
                                  f"{type(ref_error).__name__}: {ref_error}")
    if case["target"] in LOAD_DEPENDENT:
        return "unverified", "the answer follows the machine's load"
    if result is None and case["target"] in DECLINE_WITH_NONE:
        return "error", "declined (None)"
    _close(result, ref_result, 1e-4, 1e-5, "result")
    written = _outputs(ref_pre, [c[k] for c, k in ref_slots])
    # arguments sharing memory (aliased or overlapping): the group holds what its one written member
    # holds (the others are overwritten by design); with several written members, nothing is compared
    skip = set()
    groups = _sharing_groups([c[k] for c, k in slots])
    for group in groups:
        outs = [k for k in group if k in written]
        if len(outs) == 1:
            for k in group:
                if k != outs[0]:
                    if slots[k][0][slots[k][1]] is slots[outs[0]][0][slots[outs[0]][1]]:
                        _close(slots[k][0][slots[k][1]], ref_slots[outs[0]][0][ref_slots[outs[0]][1]], 1e-4, 1e-5,
                               f"array argument {k} (the same array as {outs[0]}) after the call")
                    skip.add(k)
        elif len(outs) > 1:
            skip |= set(group)
    for k, ((c, key), (rc, rk)) in enumerate(zip(slots, ref_slots)):
        if k not in skip:
            _close(c[key], rc[rk], 1e-4, 1e-5, f"array argument {k} after the call")
    return "equal", ""


def _sig_value(ann, rng, param):
    choice = param % 9
    if "ndarray" in ann or ann == "object" or choice == 0:
        shape = tuple(int(x) for x in rng.integers(0, 5, size=rng.integers(0, 4)))
        dt = ("float32", "float32", "float32", "float64", "int64", "bool", "int32")[param % 7]
        arr = np.asarray(rng.standard_normal(shape) * 3).astype(dt)  # a 0-d array, not a numpy scalar
        if param % 11 == 0:
            return M.mutate_array(arr, M.ARRAY_KINDS[(param // 11) % len(M.ARRAY_KINDS)], param, rng)
        return arr if choice != 0 or "ndarray" in ann else None
    if "Sequence" in ann or "tuple" in ann or "list" in ann:
        n = int(rng.integers(0, 5))
        return tuple(int(x) for x in rng.integers(-3, 9, size=n)) if choice < 6 else [np.zeros(3, np.float32)] * n
    if "_Int" in ann:
        return (0, 1, -1, 3, 2 ** 31, 2 ** 63 - 1, -2 ** 63, True, 2.5)[choice]
    if "_Float" in ann:
        return (0.0, 1.0, -1.0, float("nan"), float("inf"), 1e300, 3, "x", None)[choice]
    if "bool" in ann:
        return (True, False, 1, None, "y", 0.0, True, False, 2)[choice]
    if "str" in ann:
        return ("l2sq", "inf", "tanh", "", "bogus", "same", "valid", None, 1)[choice]
    return (None, 1, 1.0, "s", [], (), True, np.zeros(2, np.float32), object())[choice]


def run_signature(case, rng, fn):
    params = C.c_signature(fn)
    args = [_sig_value(ann, rng, int(rng.integers(0, 1 << 30))) for _, ann, _ in params]
    if params and rng.integers(0, 4) == 0:
        args = args[:int(rng.integers(0, len(args)))]  # too few arguments
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        return _outcome_of_error(e)
    return "unverified", "random arguments accepted"


def run_case(case, state):
    from forgegrad import _C
    threads, isa = fg.get_num_threads(), fg.get_simd()
    qpath, bf16_path = _C.quant.path(), _C.bf16.gemm_path()
    try:
        return _run_case(case, state)
    finally:  # a fuzzed set_num_threads / set_isa / int8 or bfloat16 path choice must not change the next case
        fg.set_num_threads(threads)
        fg.set_simd(isa)
        if _C.quant.path() != qpath:
            _C.quant.set_path(None)  # (the automatic choice, which it was unless a case forced one)
            if _C.quant.path() != qpath:
                _C.quant.set_path(qpath)
        if _C.bf16.gemm_path() != bf16_path:
            _C.bf16.set_gemm_native(bf16_path != "float32")


def _run_case(case, state):
    rng = np.random.default_rng(case.get("seed", 0))
    kind, _, name = case["target"].partition(":")
    if kind == "op":
        return run_op(case, rng)
    if kind == "kernel":
        return run_function(case, rng, state["kernels"][name], state["corpus"]["kernel:" + name])
    if kind == "c":
        return run_function(case, rng, state["c"][name], state["corpus"]["c:" + name])
    if kind == "sig":
        return run_signature(case, rng, state["c"][name])
    raise ValueError(f"unknown target {case['target']!r}")


def _after_memory_error():
    """Under ASan, a case that reached the soft RSS limit leaves malloc failing until ASan's watcher
    (every 100 ms) sees the RSS back under it: the next case waits for that, not to fail in its turn."""
    if M.SANITIZED:
        import gc
        import time
        gc.collect()
        time.sleep(0.3)


def main():
    corpus_path = sys.argv[1]
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed (by us or C++) goes to stderr, off the protocol
    sys.stdout = sys.stderr
    limit = int(os.environ.get("FORGEGRAD_FUZZ_MEMORY_GB", "6"))
    # a case that allocates without bound gets MemoryError, not the machine's memory; under ASan, which
    # reserves terabytes of address space, the parent bounds the child's RSS instead (fuzz_util.child_env)
    if limit > 0 and not M.SANITIZED:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (limit << 30, limit << 30))
    fg.set_num_threads(int(os.environ.get("FORGEGRAD_FUZZ_THREADS", "2")))
    state = {"corpus": C.load_or_record(corpus_path), "kernels": C.kernel_functions(), "c": C.c_functions()}
    # torch (the ops' reference) imported before "ready", which the parent waits up to 600 s for: imported by the
    # first op case instead, on a loaded machine it took that case past its 60 s (reported as a hang of op:abs)
    import torch  # noqa: F401
    proto.write(json.dumps({"ready": True, "targets": sorted(state["corpus"])}) + "\n")
    for line in sys.stdin:
        case = json.loads(line)
        try:
            try:
                outcome, detail = run_case(case, state)
            except MemoryError as e:  # comparing results of a huge case: no room for the reference
                outcome, detail = "unverified", f"MemoryError in the check: {e}"
            reply = {"ok": True, "outcome": outcome, "detail": detail}
            if "MemoryError" in detail:
                _after_memory_error()
        except Failure as f:
            reply = {"ok": False, "outcome": f.outcome, "detail": str(f)}
        except Exception:  # noqa: BLE001  a bug in the harness itself: report, never hide
            reply = {"ok": False, "outcome": "harness", "detail": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
