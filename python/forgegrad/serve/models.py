"""One loaded model version on its backend: forgegrad checkpoints on forgegrad's kernels, ONNX files
on onnxruntime.

A version directory holds either a checkpoint as ``forgegrad train`` writes it (model.json naming a
zoo model + model.safetensors) or one ``.onnx`` file (``forgegrad export`` writes both). Only zoo
models are ever built from a model.json (``forgegrad.models.from_config`` looks the name up; nothing
named in a file is imported) and weights are safetensors: nothing is unpickled.
"""
from __future__ import annotations

import glob
import inspect
import os
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

BACKENDS = ("auto", "forgegrad", "onnxruntime")
CHECKPOINT_META = "model.json"

# onnxruntime's type strings -> numpy dtypes a request may be converted to
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(float16)": np.float16, "tensor(bool)": np.bool_,
              "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


class ModelLoadError(Exception):
    """A version directory that cannot be served (the message says which file and why)."""


@dataclass(frozen=True)
class InputSpec:
    """One model input. ``shape`` excludes the batch axis; None marks a dynamic dimension.
    ``max_value``: integer inputs (token ids) must lie in [0, max_value)."""
    name: str
    dtype: np.dtype
    shape: Tuple[Optional[int], ...]
    max_value: Optional[int] = None

    def describe(self) -> Dict[str, object]:
        return {"name": self.name, "dtype": np.dtype(self.dtype).name,
                "shape": [-1] + [(-1 if d is None else d) for d in self.shape]}


class LoadedModel:
    """A callable ``run({input name: array with a leading batch axis}) -> {output name: array}``.

    ``fixed_batch``: the batch size the model only accepts (an ONNX graph with a fixed leading
    dimension), or None. ``run`` is called from the model's single worker thread only."""

    backend: str
    inputs: List[InputSpec]
    outputs: List[str]
    fixed_batch: Optional[int] = None
    path: str

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ForgegradModel(LoadedModel):
    backend = "forgegrad"

    def __init__(self, path: str):
        from ..cli import _checkpoint
        from ..cli._errors import CLIError
        from ..cli.export import VAEReconstructor
        self.path = path
        try:
            model, meta = _checkpoint.load(path)
        except CLIError as e:
            raise ModelLoadError(str(e)) from None
        from ..nn.utils import freeze
        # a VAE serves its deterministic reconstruction, as `forgegrad export` exports it; the served
        # model is frozen in place (no copy): read-only, its Linear weights packed once for every batch's
        # GEMMs (same outputs)
        self.model = freeze(VAEReconstructor(model) if meta.get("task") == "vae" else model, inplace=True)
        shape = meta.get("input_shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ModelLoadError(f"{path}: model.json has no valid 'input_shape' (a list of positive ints)")
        tokens = meta.get("input_kind") == "tokens"
        max_value = None
        if tokens:
            from ..nn import Embedding
            emb = [m for m in model.modules() if isinstance(m, Embedding)]
            max_value = emb[0].num_embeddings if emb else None
        name = _input_name(model)
        self.inputs = [InputSpec(name, np.dtype(np.int64 if tokens else np.float32), tuple(shape), max_value)]
        self.outputs = ["output"]
        self.meta = meta

    def run(self, feeds):
        from ..autograd import no_grad
        from ..tensor import Tensor
        with no_grad():
            out = self.model(Tensor._stored(feeds[self.inputs[0].name]))
        return {"output": np.asarray(out.numpy())}


def _input_name(model) -> str:
    """forward's first parameter name ("x"; "tokens" for char_lstm): the name `forgegrad export`
    gives the ONNX input by default, so a checkpoint and its export take the same request keys.
    (Not imported from forgegrad.onnx, which needs the onnx package.)"""
    try:
        params = [p for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return params[0].name if params else "input"
    except (TypeError, ValueError, AttributeError):
        return "input"


class OnnxModel(LoadedModel):
    backend = "onnxruntime"

    def __init__(self, path: str, threads: Optional[int] = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelLoadError('serving ONNX models needs onnxruntime: pip install "forgegrad[onnx]"') from None
        self.path = path
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        # onnxruntime's intra-op threads spin between runs by default; in a server they would spin on
        # the cores the event loop needs to parse requests (5 ms of CPU per request at 2 threads)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a corrupt or unsupported graph
            raise ModelLoadError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0] if str(e) else e}") from None
        self.inputs, batch_dims = [], set()
        for i in self.session.get_inputs():
            if i.type not in _ORT_TYPES:
                raise ModelLoadError(f"{path}: input {i.name!r} has type {i.type}, which this server does not accept")
            if not i.shape:
                raise ModelLoadError(f"{path}: input {i.name!r} is a scalar; inputs need a leading batch axis")
            batch_dims.add(i.shape[0] if isinstance(i.shape[0], int) else None)
            dims = tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape[1:])
            self.inputs.append(InputSpec(i.name, np.dtype(_ORT_TYPES[i.type]), dims))
        fixed = [d for d in batch_dims if d is not None]
        self.fixed_batch = fixed[0] if fixed else None
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, feeds):
        values = self.session.run(self.outputs, feeds)
        return {n: np.asarray(v) for n, v in zip(self.outputs, values)}


def find_files(version_dir: str) -> Tuple[bool, List[str]]:
    """(holds a checkpoint, the .onnx files) of a version directory."""
    return (os.path.isfile(os.path.join(version_dir, CHECKPOINT_META)),
            sorted(glob.glob(os.path.join(glob.escape(version_dir), "*.onnx"))))


def load(path: str, backend: str = "auto", threads: Optional[int] = None) -> LoadedModel:
    """Load a version directory, a checkpoint's model.json or an .onnx file on ``backend``.

    auto: a checkpoint on forgegrad, else the .onnx file on onnxruntime; forgegrad: the checkpoint
    (an error when there is none); onnxruntime: the .onnx file (an error when there is none)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if os.path.isfile(path):
        if path.endswith(".onnx"):
            if backend == "forgegrad":
                raise ModelLoadError(f"{path} is an ONNX file; forgegrad serves checkpoints (use --backend "
                                     "onnxruntime or auto)")
            return OnnxModel(path, threads)
        if os.path.basename(path) == CHECKPOINT_META:
            path = os.path.dirname(path) or "."
        else:
            raise ModelLoadError(f"{path} is neither an .onnx file nor a checkpoint's {CHECKPOINT_META}")
    has_ckpt, onnx_files = find_files(path)
    if len(onnx_files) > 1 and (backend == "onnxruntime" or not has_ckpt):
        raise ModelLoadError(f"{path} holds several .onnx files ({', '.join(map(os.path.basename, onnx_files))}); "
                             "a version directory must hold one")
    if backend == "onnxruntime" or (backend == "auto" and not has_ckpt):
        if not onnx_files:
            raise ModelLoadError(f"{path} holds no .onnx file" + (" (it holds a forgegrad checkpoint: use --backend "
                                 "forgegrad, or write one with `forgegrad export`)" if has_ckpt else
                                 f" and no forgegrad checkpoint ({CHECKPOINT_META})"))
        return OnnxModel(onnx_files[0], threads)
    if not has_ckpt:
        raise ModelLoadError(f"{path} holds no forgegrad checkpoint ({CHECKPOINT_META})")
    return ForgegradModel(path)


_fg_threads_lock = threading.Lock()


def set_forgegrad_threads(n: Optional[int]) -> None:
    if n:
        from .._runtime import set_num_threads
        with _fg_threads_lock:
            set_num_threads(int(n))


def batch_rows(feeds: Dict[str, np.ndarray]) -> int:
    return int(next(iter(feeds.values())).shape[0])


def same_trailing_shapes(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> bool:
    """Two requests can share a batch when every input has the same shape past the batch axis."""
    return all(a[k].shape[1:] == b[k].shape[1:] for k in a)


def split_outputs(outputs: Dict[str, np.ndarray], sizes: Sequence[int]) -> List[Dict[str, np.ndarray]]:
    """Per-request slices of a batch's outputs (every output has the batch on its first axis)."""
    total = sum(sizes)
    for name, v in outputs.items():
        if v.ndim == 0 or v.shape[0] != total:
            raise ValueError(f"output {name!r} has shape {v.shape}, not the batch of {total} on its first axis")
    parts, start = [], 0
    for n in sizes:
        parts.append({k: v[start:start + n] for k, v in outputs.items()})
        start += n
    return parts
