"""Request bodies <-> arrays: JSON (TF Serving's row and columnar formats, TorchServe's plain tensors)
and binary ``.npy``.

Everything a client sends is checked here before it reaches a queue: JSON that does not parse,
non-numeric or ragged values, wrong rank or dimensions, NaN/Inf for a float input (unless the server
allows them), non-integer or out-of-range token ids, a malformed or pickled ``.npy``. Each raises a
ServeError(400, message naming the input and what was expected), so a bad request never reaches a
model and never disturbs the requests batched with it. ``.npy`` bodies are read with
``allow_pickle=False``: an object array is refused, never unpickled.
"""
from __future__ import annotations

import io
import json
import math
import re
from typing import Dict, List, Optional, Sequence

import numpy as np

from ._errors import ServeError
from .models import InputSpec

NPY_TYPES = ("application/x-npy", "application/octet-stream", "application/npy")
JSON_TYPE = "application/json"

Feeds = Dict[str, np.ndarray]
# the ufuncs' reductions without ndarray.min/max/sum's Python wrappers (a few us a request)
_min, _max, _sum = np.minimum.reduce, np.maximum.reduce, np.add.reduce


def bad(message: str) -> ServeError:
    return ServeError(400, message)


def is_npy(content_type: Optional[str]) -> bool:
    return (content_type or "").split(";")[0].strip().lower() in NPY_TYPES


def wants_npy(accept: Optional[str]) -> bool:
    return any(t in (accept or "").lower() for t in ("application/x-npy", "application/npy",
                                                     "application/octet-stream"))


async def read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes (from
    Content-Length before reading, or while streaming a chunked body)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise bad(f"Content-Length {declared!r} is not an integer") from None
        if n > limit:
            raise ServeError(413, f"request body of {n} bytes exceeds the limit of {limit} bytes (--max-body-bytes)")

    def too_large():
        return ServeError(413, f"request body exceeds the limit of {limit} bytes (--max-body-bytes)")
    read_whole = getattr(request, "read_whole", None)  # fast_routes.RawRequest: no async generator
    if read_whole is not None:
        return await read_whole(limit, too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


try:  # the serve extra installs orjson: it parses a request of 784 floats ~5x faster than json
    from orjson import dumps as _fast_dumps
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - exercised where orjson is missing
    _fast_dumps = _fast_loads = None


def parse_json(body: bytes):
    if not body:
        raise bad("empty request body: expected JSON (or an .npy body with Content-Type application/x-npy)")
    if _fast_loads is not None:
        try:
            return _fast_loads(body)
        except ValueError:
            pass  # json decides: it also takes NaN/Infinity literals and integers past 64 bits, and words the error
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise bad(f"request body is not valid JSON: {str(e)[:200]}") from None


try:  # forgegrad's own decoder of numeric JSON arrays (cpp/core/json_numbers.cpp)
    from .._C.serve import json_number_array as _json_number_array
except ImportError:  # pragma: no cover - an extension built before it existed
    _json_number_array = None

_WS = b" \t\n\r"
# a TF Serving body of one tensor: {"instances": <array>} or {"inputs": <array>}
_TF_TENSOR_BODY = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*"(instances|inputs)"[ \t\n\r]*:')
_TS_DATA_BODY = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*"data"[ \t\n\r]*:')


def _fast_array(body: bytes, spec_list: Sequence[InputSpec], envelope) -> Optional[tuple]:
    """(key, array in the input's dtype) of a body that is one JSON array of numbers for a model with
    one float32 or float64 input, plain (``envelope`` None) or as the only member of a JSON object
    (whose key ``envelope`` matches); None for every other body, which then takes the generic path
    (orjson, numpy, conform), the one that words the errors. Both give the same array: each number
    is the same double (integer literals included, see json_number_array), rounded to float32 as
    numpy rounds it, and a value beyond float32's range is left to the generic path. (The array
    still needs _shaped: only its dtype and values are checked.)"""
    if _json_number_array is None or len(spec_list) != 1 or spec_list[0].dtype not in _FAST_DTYPES:
        return None
    float32 = spec_list[0].dtype == np.float32
    if envelope is None:
        arr = _json_number_array(body, 0, -1, float32)
        return None if arr is None else ("", arr)
    m = envelope.match(body)
    if m is None:
        return None
    stop = len(body.rstrip(_WS)) - 1  # the object's closing brace
    if stop < m.end() or body[stop] != 0x7D:
        return None
    arr = _json_number_array(body, m.end(), stop, float32)
    return None if arr is None else (m.group(1).decode() if m.groups() else "data", arr)


_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# The header numpy's own np.save writes (format 1.0, 2.0 or 3.0) for a C-ordered array of a plain
# numeric dtype, which _fast_npy reads without np.load: np.load parses the header with
# ast.literal_eval, ~60 us a request, three times what parsing the same request as JSON costs.
_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADER = re.compile(rb"\{'descr': '(<[fiu][248]|<f2|\|[iub]1)', 'fortran_order': False, "
                         rb"'shape': \(((?:(?:0|[1-9][0-9]*), )*(?:(?:0|[1-9][0-9]*),?)?)\), \} *\n")


def _fast_npy(body: bytes) -> Optional[np.ndarray]:
    """The array of an .npy body in np.save's plain form, equal to what np.load returns (a fresh,
    writeable array); None for every other body (np.load then reads it or words the error)."""
    if len(body) < 12 or body[:6] != _NPY_MAGIC:
        return None
    if body[6] == 1:
        start, hlen = 10, int.from_bytes(body[8:10], "little")
    elif body[6] in (2, 3):
        start, hlen = 12, int.from_bytes(body[8:12], "little")
    else:
        return None
    m = _NPY_HEADER.fullmatch(body, start, start + hlen)
    if m is None:
        return None
    dtype = np.dtype(m.group(1).decode())
    shape = tuple(int(d) for d in m.group(2).split(b",") if d.strip())
    if len(body) - start - hlen != math.prod(shape) * dtype.itemsize:
        return None  # truncated, or trailing bytes: np.load decides
    return np.frombuffer(body, dtype, math.prod(shape), start + hlen).reshape(shape).copy()


def parse_npy(body: bytes) -> np.ndarray:
    if not body:
        raise bad("empty request body: expected an .npy file")
    arr = _fast_npy(body)
    if arr is not None:
        return arr
    try:
        arr = np.load(io.BytesIO(body), allow_pickle=False)
    except ValueError as e:  # object arrays (would need pickle), bad headers, truncated data
        raise bad(f"malformed .npy body: {str(e)[:200]}") from None
    except Exception as e:  # np.load on garbage can raise OSError, EOFError, SyntaxError, ...
        raise bad(f"malformed .npy body ({type(e).__name__}): {str(e)[:200]}") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise bad("the body is an .npz archive; send one array as .npy")
    return arr


def _numeric(value, where: str) -> np.ndarray:
    """A JSON value as an int or float numpy array; strings, booleans, nulls, objects and ragged
    lists are refused."""
    try:
        arr = np.asarray(value)
    except (ValueError, OverflowError) as e:  # ragged nesting ("inhomogeneous shape") and the like
        raise bad(f"{where}: not a rectangular array of numbers ({str(e)[:160]})") from None
    if arr.dtype.kind not in "iuf":
        kinds = {"U": "strings", "S": "strings", "b": "booleans", "O": "nulls, objects, ragged lists or huge integers"}
        raise bad(f"{where}: expected numbers, got {kinds.get(arr.dtype.kind, arr.dtype.name)}")
    return arr


def conform(arr: np.ndarray, spec: InputSpec, where: str, allow_nonfinite: bool, batched: bool = True) -> np.ndarray:
    """``arr`` checked against ``spec`` and converted to its dtype (with the batch axis added when
    ``batched`` is False)."""
    if arr.dtype.kind not in "iuf":
        raise bad(f"{where}: dtype {arr.dtype} is not numeric (expected {np.dtype(spec.dtype).name})")
    return _convert(_shaped(arr, spec, where, batched), spec, where, allow_nonfinite)


def _shaped(arr: np.ndarray, spec: InputSpec, where: str, batched: bool) -> np.ndarray:
    """``arr`` (with the batch axis added when ``batched`` is False) checked against spec's shape."""
    if not batched:
        arr = arr[None]

    def expected():
        return "(N, " + ", ".join("?" if d is None else str(d) for d in spec.shape) + ")"

    if arr.ndim != len(spec.shape) + 1:
        raise bad(f"{where}: expected shape {expected()}, got {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise bad(f"{where}: the batch is empty")
    for axis, (got, dim) in enumerate(zip(arr.shape[1:], spec.shape), start=1):
        if dim is not None and got != dim:
            raise bad(f"{where}: expected shape {expected()}, got {tuple(arr.shape)} (axis {axis} must be {dim})")
        if got == 0:
            raise bad(f"{where}: axis {axis} is empty")
    return arr


def _convert(arr: np.ndarray, spec: InputSpec, where: str, allow_nonfinite: bool) -> np.ndarray:
    """``arr`` in spec's dtype, C-contiguous; values the dtype cannot hold are refused."""
    target = np.dtype(spec.dtype)
    if target.kind == "f":
        # the common cases need neither np.errstate (~10 us a request) nor a finiteness pass: integers
        # into float32/64 never overflow, and floats within the target's range are finite before and
        # after the cast (NaN fails the range test and takes the checked path below)
        if arr.dtype.kind in "iu" and target.itemsize >= 4:
            return np.ascontiguousarray(arr.astype(target))
        if arr.dtype.kind == "f":
            fmax = np.finfo(target).max
            if _min(arr, axis=None) >= -fmax and _max(arr, axis=None) <= fmax:
                return np.ascontiguousarray(arr.astype(target))
        with np.errstate(over="ignore", invalid="ignore"):
            out = arr.astype(target)
        if not allow_nonfinite and not np.isfinite(out).all():  # one pass in the common (finite) case
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise bad(f"{where}: contains NaN or infinity (not allowed; the server was started without "
                          "--allow-nonfinite)")
            raise bad(f"{where}: values overflow {target.name}")
        return np.ascontiguousarray(out)
    if target.kind in "iu" or target.kind == "b":
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all() or not (arr == np.floor(arr)).all():
                raise bad(f"{where}: expects integers ({target.name}), got non-integer values")
        info = np.iinfo(target) if target.kind != "b" else None
        if info is not None and (arr.min() < info.min or arr.max() > info.max):
            raise bad(f"{where}: values out of the range of {target.name}")
        if spec.max_value is not None and (arr.min() < 0 or arr.max() >= spec.max_value):
            raise bad(f"{where}: token ids must lie in [0, {spec.max_value}), got values in "
                      f"[{arr.min()}, {arr.max()}]")
        return np.ascontiguousarray(arr.astype(target))
    return np.ascontiguousarray(arr.astype(target))


def _single_input(inputs: Sequence[InputSpec], what: str) -> InputSpec:
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise bad(f"{what} needs a model with one input; this model has {len(inputs)} ({names}): send a JSON "
                  "object keyed by input name")
    return inputs[0]


def _named(obj: dict, inputs: Sequence[InputSpec], where: str, allow_nonfinite: bool, batched: bool) -> Feeds:
    names = [i.name for i in inputs]
    unknown = [k for k in obj if k not in names]
    missing = [n for n in names if n not in obj]
    if unknown or missing:
        raise bad(f"{where}: expected the inputs {names}" + (f"; unknown: {unknown}" if unknown else "")
                  + (f"; missing: {missing}" if missing else ""))
    return {i.name: conform(_numeric(obj[i.name], f"{where}[{i.name!r}]"), i, f"{where}[{i.name!r}]",
                            allow_nonfinite, batched) for i in inputs}


def _check_rows(feeds: Feeds, where: str) -> Feeds:
    sizes = {k: v.shape[0] for k, v in feeds.items()}
    if len(set(sizes.values())) > 1:
        raise bad(f"{where}: inputs disagree on the batch size: {sizes}")
    return feeds


def tf_body(body: bytes, inputs: Sequence[InputSpec], allow_nonfinite: bool):
    """(feeds, "row" | "columnar") from the bytes of a TF Serving predict body (see tf_request)."""
    fast = _fast_array(body, inputs, _TF_TENSOR_BODY)
    if fast is not None:
        key, arr = fast
        return {inputs[0].name: _shaped(arr, inputs[0], key, True)}, "row" if key == "instances" else "columnar"
    return tf_request(parse_json(body), inputs, allow_nonfinite)


def tf_request(payload, inputs: Sequence[InputSpec], allow_nonfinite: bool):
    """(feeds, "row" | "columnar") from a TF Serving predict body: {"instances": [...]} or {"inputs": ...}."""
    if not isinstance(payload, dict):
        raise bad('expected a JSON object with "instances" (row format) or "inputs" (columnar format)')
    extra = [k for k in payload if k not in ("instances", "inputs", "signature_name")]
    if extra:
        raise bad(f"unknown request keys {extra}: expected \"instances\" or \"inputs\"")
    if ("instances" in payload) == ("inputs" in payload):
        raise bad('expected exactly one of "instances" (row format) and "inputs" (columnar format)')
    if "inputs" in payload:
        value = payload["inputs"]
        if isinstance(value, dict):
            return _check_rows(_named(value, inputs, "inputs", allow_nonfinite, True), "inputs"), "columnar"
        spec = _single_input(inputs, '"inputs" given as one tensor')
        return {spec.name: conform(_numeric(value, "inputs"), spec, "inputs", allow_nonfinite)}, "columnar"
    rows = payload["instances"]
    if not isinstance(rows, list) or not rows:
        raise bad('"instances" must be a non-empty list (one entry per instance)')
    if all(isinstance(r, dict) for r in rows):
        per_row = [_named(r, inputs, f"instances[{n}]", allow_nonfinite, False) for n, r in enumerate(rows)]
        feeds = {}
        for i in inputs:
            shapes = {p[i.name].shape for p in per_row}
            if len(shapes) > 1:
                raise bad(f"instances: input {i.name!r} has different shapes across instances: {sorted(shapes)}")
            feeds[i.name] = np.concatenate([p[i.name] for p in per_row])
        return feeds, "row"
    if any(isinstance(r, dict) for r in rows):
        raise bad("instances: mix of objects and plain values; use one form for every instance")
    spec = _single_input(inputs, '"instances" given as plain values')
    return {spec.name: conform(_numeric(rows, "instances"), spec, "instances", allow_nonfinite)}, "row"


def tf_response(outputs: Feeds, form: str) -> dict:
    if form == "row":
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values())).tolist()}
        n = next(iter(outputs.values())).shape[0]
        return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(n)]}
    if len(outputs) == 1:
        return {"outputs": next(iter(outputs.values())).tolist()}
    return {"outputs": {k: v.tolist() for k, v in outputs.items()}}


def instance_or_batch(arr: np.ndarray, spec: InputSpec, where: str, allow_nonfinite: bool, typed: bool = False):
    """(feeds array, batched) for a TorchServe body: one instance (the input's rank) or a batch (one
    more axis). ``typed``: arr already holds valid values of spec's dtype (only its shape is checked)."""
    batched = arr.ndim == len(spec.shape) + 1
    if not batched and arr.ndim != len(spec.shape):
        dims = ", ".join("?" if d is None else str(d) for d in spec.shape)
        raise bad(f"{where}: expected one instance of shape ({dims}) or a batch (N, {dims}), got {tuple(arr.shape)}")
    if typed:
        return _shaped(arr, spec, where, batched), batched
    return conform(arr, spec, where, allow_nonfinite, batched), batched


def torchserve_request(body: bytes, content_type: Optional[str], inputs: Sequence[InputSpec], allow_nonfinite: bool):
    """(feeds, batched) from a TorchServe predictions body: a JSON tensor, a JSON object keyed by
    input name, or an .npy array."""
    if is_npy(content_type):
        spec = _single_input(inputs, "an .npy body")
        arr, batched = instance_or_batch(parse_npy(body), spec, "body", allow_nonfinite)
        return {spec.name: arr}, batched
    fast = _fast_array(body, inputs, None) or _fast_array(body, inputs, _TS_DATA_BODY)
    if fast is not None:
        arr, batched = instance_or_batch(fast[1], inputs[0], "body", allow_nonfinite, typed=True)
        return {inputs[0].name: arr}, batched
    payload = parse_json(body)
    if isinstance(payload, dict):
        if "data" in payload and len(payload) == 1 and len(inputs) == 1:  # {"data": tensor}
            payload = payload["data"]
        else:
            batched = {}
            feeds = {}
            for i in inputs:
                if i.name not in payload:
                    raise bad(f"body: missing input {i.name!r} (expected the inputs {[s.name for s in inputs]})")
                feeds[i.name], batched[i.name] = instance_or_batch(_numeric(payload[i.name], f"body[{i.name!r}]"),
                                                                   i, f"body[{i.name!r}]", allow_nonfinite)
            unknown = [k for k in payload if k not in feeds]
            if unknown:
                raise bad(f"body: unknown inputs {unknown} (expected {[s.name for s in inputs]})")
            if len(set(batched.values())) > 1:
                raise bad("body: some inputs are batched and some are single instances")
            return _check_rows(feeds, "body"), next(iter(batched.values()))
    spec = _single_input(inputs, "a JSON tensor body")
    arr, batched = instance_or_batch(_numeric(payload, "body"), spec, "body", allow_nonfinite)
    return {spec.name: arr}, batched


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def json_bytes(obj, finite: bool = False) -> bytes:
    """``obj`` as compact JSON. ``finite``: the caller knows that it holds no NaN or infinity, so
    orjson may write it (orjson would turn them into null; json writes NaN/Infinity literals, as TF
    Serving does, rather than failing the response)."""
    if finite and _fast_dumps is not None:
        return _fast_dumps(obj)
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def all_finite(outputs: Feeds) -> bool:
    """No NaN or infinity in any output, tested on each output's sum (a finite sum is a finite
    output; a sum that overflows only sends the response through json)."""
    for v in outputs.values():
        if v.dtype.kind in "fc" and not np.isfinite(_sum(v, axis=None)):
            return False
    return True


def output_rows(outputs: Feeds, batched: bool) -> List:
    """TorchServe response body: the output (without the batch axis for a single instance)."""
    if len(outputs) == 1:
        v = next(iter(outputs.values()))
        return (v if batched else v[0]).tolist()
    return {k: (v if batched else v[0]).tolist() for k, v in outputs.items()}
