"""The shapes the exported graph declares for its outputs.

The three traces tell a dimension that follows the dynamic axes from a constant one only where their sizes
make it differ, and they are just above the example's: a stride-4 conv maps heights 16, 17 and 18 all to 4,
an adaptive pool maps them to its fixed size, and only the second 4 is a constant. Declaring the first one
fixed makes onnxruntime warn "Expected shape ... does not match" at every other height. So the model also
runs on the meta device (shapes only, no kernels: about a millisecond per run) twice more: with every
dynamic axis far above the example's size (``2a + 37``, nearer where the model refuses that, as one with a
maximum sequence length does), and at half of it. A dimension that any run changes is declared by a name,
one that none changes is a fixed number. A chain of strides whose product is at most the distance between
two sizes cannot map both to the same size, so the far run sees every downsampling up to ``a + 37``.

The name of a dynamic dimension is the expression of the input axes that the traces solve it to (``batch``,
``batch*seq``, ``seq-1``) when the probes agree with it, else ``<output>_dim<axis>`` (torch.onnx's
convention for unnamed axes): ``x[:, 8:18]`` is 8, 9 and 10 long at heights 16, 17 and 18, which fits
``height-8``, and 10 long at any height above 18.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

from .. import autograd
from ..devices import MetaArray
from ..tensor import Tensor
from ._capture import flatten_outputs
from ._context import dims_of
from ._symbolic import Dyn, Expr, Symbols

Shape = Optional[Tuple[int, ...]]
Probe = Tuple[Dict[str, int], List[Shape]]  # (sizes of every dynamic axis, each output's shape)


def _probe_candidates(symbols: Symbols) -> List[List[Dict[str, int]]]:
    """For each probe, the sizes to try in order (the first the model runs at is used)."""
    a = {s: symbols.a[s] for s in symbols.free}
    far = [symbols.full({s: n + step(n) for s, n in a.items()})
           for step in (lambda n: n + 37, lambda n: 13, lambda n: 5, lambda n: 3)]
    probes = [far]
    if any(n > 1 for n in a.values()):
        probes.append([symbols.full({s: max(1, n // 2) for s, n in a.items()})])
    return probes


def output_shapes(out) -> List[Shape]:
    """The shape of each flat output of a forward (None where an output is not a Tensor)."""
    flat, _ = flatten_outputs(out)
    return [tuple(int(d) for d in t.shape) if isinstance(t, Tensor) else None for t in flat]


def probe_output_shapes(model, inputs: Sequence[Tensor], input_axes: Sequence[Dict[int, str]],
                        symbols: Symbols) -> List[Probe]:
    """The model's output shapes on meta inputs at sizes far from the traces' (see the module's docstring).
    Sizes the model cannot run at on the meta device are skipped: the traces alone decide then."""
    probes: List[Probe] = []
    if not symbols.names:
        return probes
    for candidates in _probe_candidates(symbols):
        for sizes in candidates:
            meta = [Tensor._wrap(MetaArray(tuple(sizes[ax[k]] if k in ax else d for k, d in enumerate(x.shape)),
                                           x.dtype))
                    for x, ax in zip(inputs, input_axes)]
            try:
                with autograd.no_grad():
                    out = model(*meta)
            except Exception:  # a model that refuses these sizes (or the meta device): try nearer ones
                continue
            probes.append((sizes, output_shapes(out)))
            break
    return probes


def _value(e: Expr, sizes: Dict[str, int]) -> int:
    v = e.coef
    for s in e.syms:
        v *= sizes[s]
    return v + e.offset


def declared_dims(shapes_a: Sequence[Shape], shapes_b: Optional[Sequence[Shape]],
                  shapes_c: Optional[Sequence[Shape]], probes: Sequence[Probe], symbols: Symbols,
                  names: Sequence[str], out_axes: Dict[str, Dict[int, str]]) -> List[List[Union[int, str]]]:
    """Each output's declared shape: a fixed size where the traces and every probe agree, else a name (the
    user's from ``out_axes``, the solved expression the probes confirm, or ``<output>_dim<axis>``)."""
    declared = []
    for i, (shape, name) in enumerate(zip(shapes_a, names)):
        def other(shapes):
            s = shapes[i] if shapes is not None and i < len(shapes) else None
            return s if s is not None and len(s) == len(shape) else None
        dims = dims_of(shape, other(shapes_b), other(shapes_c))
        seen = [(sizes, p[i]) for sizes, p in probes if i < len(p) and p[i] is not None and len(p[i]) == len(shape)]
        out: List[Union[int, str]] = []
        for k, d in enumerate(dims):
            if k in out_axes.get(name, {}):
                out.append(out_axes[name][k])
                continue
            if not isinstance(d, Dyn) and all(ps[k] == d for _, ps in seen):
                out.append(d)
                continue
            e = symbols.solve(d) if isinstance(d, Dyn) else None
            ok = e is not None and all(_value(e, sizes) == ps[k] for sizes, ps in seen)
            out.append(str(e) if ok else f"{name}_dim{k}")
        declared.append(out)
    return declared
