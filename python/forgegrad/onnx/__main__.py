"""``python -m forgegrad.onnx``: export a saved model to ONNX and print the verification report.

Checkpoints hold weights only, so the model is rebuilt first, from

- ``--model NAME`` with ``--kwarg key=value`` (or ``--kwargs JSON``): a ``forgegrad.models`` zoo model;
- ``--model package.module:factory``: any Python callable returning a Module (same kwargs); only ever
  taken from the command line, which the user typed;
- neither: the ``model.json`` written next to the weights by ``forgegrad train`` (name + kwargs). Its
  ``name`` must be a zoo model: a checkpoint folder is data, so nothing named in it is imported or run.

    python -m forgegrad.onnx --model mlp --kwarg in_features=64 --kwarg out_features=10 \\
        --checkpoint run/model.safetensors --input-shape 1,64 --out mlp.onnx --opset 17

Exit status: 0 exported and verified, 1 verification failed (the file is kept), 2 usage or export error.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


class UsageError(Exception):
    pass


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare string


def _kwargs(args) -> Dict[str, Any]:
    kw: Dict[str, Any] = {}
    if args.kwargs:
        try:
            kw.update(json.loads(args.kwargs))
        except ValueError as e:
            raise UsageError(f"--kwargs is not valid JSON: {e}") from None
    for item in args.kwarg or ():
        if "=" not in item:
            raise UsageError(f"--kwarg {item!r}: expected key=value")
        k, v = item.split("=", 1)
        kw[k.strip()] = _parse_value(v)
    return kw


def _shape(text: str) -> Tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise UsageError(f"--input-shape {text!r}: expected comma-separated sizes like 1,3,32,32") from None
    if not dims or any(d <= 0 for d in dims):
        raise UsageError(f"--input-shape {text!r}: sizes must be positive")
    return dims


def _sidecar_meta(checkpoint: Optional[str]) -> Optional[dict]:
    """The model.json that `forgegrad train` writes beside its weights, if there is one."""
    if not checkpoint:
        return None
    if os.path.isdir(checkpoint):
        cands = [os.path.join(checkpoint, "model.json")]
    else:
        cands = [os.path.splitext(checkpoint)[0] + ".json", os.path.join(os.path.dirname(checkpoint), "model.json")]
    for c in cands:
        if os.path.isfile(c):
            with open(c, encoding="utf-8") as f:
                meta = json.load(f)
            if isinstance(meta, dict) and "name" in meta:
                return meta
    return None


def _zoo(spec: str):
    try:
        return importlib.import_module("forgegrad.models")
    except ImportError:
        raise UsageError(f"--model {spec!r}: forgegrad.models (the model zoo) is not available in this build; "
                         "give a module:factory spec instead") from None


def _meta_model(meta: dict) -> Tuple[str, Dict[str, Any]]:
    """(zoo name, kwargs) from a model.json. A checkpoint folder may come from anyone, so its name must
    be a zoo entry: a ``module:attr`` name there would import and call arbitrary code."""
    name, kwargs = meta.get("name"), meta.get("kwargs", {})
    if not isinstance(name, str) or ":" in name or name not in _zoo(str(name)).available():
        raise UsageError(f"model.json names model {name!r}, which is not a forgegrad.models zoo model; "
                         "a checkpoint's model.json may only name zoo models (nothing in a checkpoint folder "
                         "is imported or run); give --model explicitly to build another model")
    if not isinstance(kwargs, dict):
        raise UsageError(f"model.json: 'kwargs' must be a JSON object, got {type(kwargs).__name__}")
    return name, kwargs


def build_model(spec: Optional[str], kwargs: Dict[str, Any], meta: Optional[dict]):
    """The model named by ``spec`` (the --model argument), else by the checkpoint's model.json.

    ``module:factory`` specs are honoured from the command line only (the user typed them, with the
    same trust as running Python); a model.json may name zoo models only."""
    if spec is None:
        if meta is None:
            raise UsageError("--model is required (a forgegrad.models name or module:factory) when the "
                             "checkpoint has no model.json beside it")
        name, meta_kwargs = _meta_model(meta)
        return _create(name, {**meta_kwargs, **kwargs}, f"model.json model {name!r}")
    if ":" in spec:
        mod_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise UsageError(f"--model {spec!r}: cannot import {attr!r} from {mod_name!r}: {e}") from None
        return factory(**kwargs)
    return _create(spec, kwargs, f"--model {spec!r}")


def _create(spec: str, kwargs: Dict[str, Any], where: str):
    try:
        return _zoo(spec).create(spec, **kwargs)
    except ValueError as e:
        raise UsageError(f"{where}: {e}") from None


def load_weights(model, path: str) -> None:
    model.load_state_dict(read_weights(path))


def read_weights(path: str) -> Dict[str, Any]:
    if os.path.isdir(path):
        path = os.path.join(path, "model.safetensors")
    if not os.path.isfile(path):
        raise UsageError(f"--checkpoint {path}: no such file")
    import forgegrad
    loader = getattr(forgegrad, "load", None)
    if loader is not None:
        state = loader(path)
    else:
        from safetensors.numpy import load_file
        state = load_file(path)
    return state


def model_dtype(requested: Optional[str], state: Optional[Dict[str, Any]], input_dtypes: List[str] = ()) -> str:
    """The model's floating dtype: --dtype, else float64 where an --input-dtype is float64 or every floating tensor
    of the checkpoint is (loading it into the float32 model the factory builds would round the weights), else
    float32."""
    if requested is not None:
        return requested
    if any(np.dtype(d) == np.float64 for d in input_dtypes):
        return "float64"
    kinds = {np.dtype(getattr(v, "dtype", np.float32)) for v in (state or {}).values()}
    floats = {d for d in kinds if d.kind == "f"}
    return "float64" if floats == {np.dtype(np.float64)} else "float32"


def _example_inputs(shapes: List[Tuple[int, ...]], dtypes: List[str], meta: Optional[dict], seed: int,
                    float_dtype: str = "float32"):
    rng = np.random.default_rng(seed)
    if not shapes and meta and meta.get("input_shape"):
        shapes = [(1,) + tuple(meta["input_shape"])]
        if meta.get("input_kind") == "tokens":
            dtypes = ["int64"]
    if not shapes:
        raise UsageError("--input-shape is required (e.g. --input-shape 1,3,32,32; repeat it for several inputs)")
    dtypes = list(dtypes or []) + [float_dtype] * (len(shapes) - len(dtypes or []))
    out = []
    for shape, dt in zip(shapes, dtypes):
        if np.dtype(dt).kind in "iu":
            hi = int((meta or {}).get("num_classes") or 2)
            out.append(rng.integers(0, hi, size=shape).astype(dt))
        else:
            out.append(rng.standard_normal(shape).astype(dt))
    from ..tensor import Tensor
    # Tensors of the dtype asked for (a bare float64 array would become a float32 input)
    return [Tensor(a, dtype=a.dtype) for a in out]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m forgegrad.onnx", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="forgegrad.models zoo name, or package.module:factory")
    p.add_argument("--kwarg", action="append", metavar="KEY=VALUE", help="model argument (JSON value); repeatable")
    p.add_argument("--kwargs", metavar="JSON", help="model arguments as a JSON object")
    p.add_argument("--checkpoint", help="weights (.safetensors file, or a `forgegrad train` output folder)")
    p.add_argument("--input-shape", action="append", default=[], metavar="N,C,...",
                   help="example input shape (the batch axis first); repeat for several inputs")
    p.add_argument("--input-dtype", action="append", default=[], metavar="DTYPE",
                   help="dtype of each input (the model's float dtype by default; int64 for token ids)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="the model's float dtype (default: float64 for a float64 checkpoint or --input-dtype float64, "
                        "else float32): float64 exports a double graph")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 13-21 (default 17)")
    p.add_argument("--static", action="store_true", help="no dynamic axes (fixed batch size)")
    p.add_argument("--dynamic-axes", metavar="JSON",
                   help='dynamic axes per input/output name, e.g. \'{"x": {"0": "batch", "1": "seq"}}\' '
                        "(default: batch axes, plus the sequence axis of recurrent models)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    p.add_argument("--rtol", type=float, default=None, help="(default 1e-5; 1e-9 for a graph double throughout)")
    p.add_argument("--atol", type=float, default=None, help="(default 1e-6; 1e-10 for a graph double throughout)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from . import OnnxExportError, OnnxVerificationError, export
    try:
        meta = _sidecar_meta(args.checkpoint)
        model = build_model(args.model, _kwargs(args), meta)
        state = read_weights(args.checkpoint) if args.checkpoint else None
        try:
            dtype = model_dtype(args.dtype, state, args.input_dtype)
        except TypeError as e:
            raise UsageError(f"--input-dtype {args.input_dtype}: {e}") from None
        if dtype == "float64":
            model = model.double()
        if state is not None:
            model.load_state_dict(state)
        inputs = _example_inputs([_shape(s) for s in args.input_shape], args.input_dtype, meta, args.seed, dtype)
        dynamic_axes = {} if args.static else None
        if args.dynamic_axes:
            try:
                dynamic_axes = json.loads(args.dynamic_axes)
            except ValueError as e:
                raise UsageError(f"--dynamic-axes is not valid JSON: {e}") from None
        report = export(model, tuple(inputs), args.out, opset=args.opset, dynamic_axes=dynamic_axes,
                        verify=not args.no_verify, rtol=args.rtol, atol=args.atol)
    except OnnxVerificationError as e:
        print(str(e), file=sys.stderr)
        return 1
    except (UsageError, OnnxExportError, ValueError, TypeError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
