"""ONNX mappings of linear-algebra ops ONNX (opset 21) has no operator for, unrolled over the matrix size (known at
export; batch dims may be dynamic): linalg.solve_triangular (substitution row by row), cholesky_solve (two
substitutions), linalg.cholesky (column by column), linalg.inv / linalg.solve / linalg.slogdet (Gauss-Jordan
elimination with partial pivoting: the largest |pivot| of the column, its first row on ties, as LAPACK's getrf picks
it), linalg.matrix_exp (the kernel's Pade 13 scaling and squaring in double, the squarings a Loop) and linalg.qr
(Householder, LAPACK's signs). The graph grows with n (~12 nodes per step); values agree with LAPACK's to rounding
(a different operation order). A singular or non-positive-definite input gives inf / NaN in the graph where the
kernel raises. A matrix size that is a dynamic axis is refused at export (UnsupportedOpError), as the unrolled graph
holds one size."""
from __future__ import annotations

import numpy as np


def _static_sizes(op, what, **axes):
    """Raise UnsupportedOpError when a size the graph is unrolled over (axes of the named inputs) is a dynamic
    axis: the graph would hold the example's size and fail, or compute garbage, at another."""
    for name, idx in axes.items():
        dims = op.in_dims(name)
        for i in idx:
            if -len(dims) <= i < len(dims) and not isinstance(dims[i], (int, np.integer)):
                raise op.unsupported(
                    f"{what}: dim {i} of {name!r} is a dynamic axis, but the ONNX mapping unrolls the computation "
                    f"over the matrix size ({dims[i].a} in the example), so it must be static: leave the matrix "
                    "dims out of dynamic_axes (batch dims may be dynamic)")


def _rows(ctx, m, start, stop):
    return ctx.node("Slice", [m, ctx.ints([start]), ctx.ints([stop]), ctx.ints([-2])])


def _cols(ctx, m, start, stop):
    return ctx.node("Slice", [m, ctx.ints([start]), ctx.ints([stop]), ctx.ints([-1])])


def _swap_last(ctx, m, ndim):
    perm = list(range(ndim - 2)) + [ndim - 1, ndim - 2]
    return ctx.node("Transpose", [m], perm=perm)


def _tri_solve(ctx, a, b, n, upper, unit):
    """X with A X = B for triangular A (..., n, n) and B (..., n, k): one row of X per step."""
    xs = [None] * n
    order = range(n - 1, -1, -1) if upper else range(n)
    for i in order:
        r = _rows(ctx, b, i, i + 1)
        lo, hi = (i + 1, n) if upper else (0, i)
        if hi > lo:
            known = ctx.node("Concat", xs[lo:hi], axis=-2)
            r = ctx.node("Sub", [r, ctx.node("MatMul", [_cols(ctx, _rows(ctx, a, i, i + 1), lo, hi), known])])
        if not unit:
            r = ctx.node("Div", [r, _cols(ctx, _rows(ctx, a, i, i + 1), i, i + 1)])
        xs[i] = r
    return xs[0] if n == 1 else ctx.node("Concat", xs, axis=-2)


def solve_triangular_onnx(ctx, op):
    A, B = op.args["A"], op.args["B"]
    n = int(A.shape[-1])
    a, b = op.input("A"), op.input("B")
    upper, left = bool(op.attr("upper")), bool(op.attr("left", True))
    _static_sizes(op, "linalg.solve_triangular", A=(-2, -1), B=(-2,) if left else (-1,))
    unit = bool(op.attr("unitriangular", False))
    if left:
        return [_tri_solve(ctx, a, b, n, upper, unit)]
    # X A = B  <=>  A^T X^T = B^T, A^T triangular the other way
    xt = _tri_solve(ctx, _swap_last(ctx, a, A.ndim), _swap_last(ctx, b, B.ndim), n, not upper, unit)
    return [_swap_last(ctx, xt, max(A.ndim, B.ndim))]


def cholesky_solve_onnx(ctx, op):
    """cholesky_solve(B, L): L Y = B then L^T X = Y (upper: U^T Y = B then U X = Y), two substitutions that read
    only the factor's triangle, as the kernel."""
    L = op.args["L"]
    n = int(L.shape[-1])
    _static_sizes(op, "cholesky_solve", B=(-2,), L=(-2, -1))
    b, lt = op.input("B"), op.input("L")
    other = _swap_last(ctx, lt, L.ndim)
    upper = bool(op.attr("upper", False))
    first, second = (other, lt) if upper else (lt, other)
    return [_tri_solve(ctx, second, _tri_solve(ctx, first, b, n, False, False), n, True, False)]


def cholesky_onnx(ctx, op):
    """L column by column from A's lower triangle: c = A[:, j] - L[:, :j] L[j, :j]^T, L[:, j] = c / sqrt(c[j])
    below the diagonal (zero above)."""
    A = op.args["A"]
    n, nd = int(A.shape[-1]), A.ndim
    _static_sizes(op, "linalg.cholesky", A=(-2, -1))
    a = op.input("A")
    cols = []
    for j in range(n):
        c = _cols(ctx, a, j, j + 1)  # (..., n, 1)
        if j:
            prev = ctx.node("Concat", cols, axis=-1) if j > 1 else cols[0]  # (..., n, j)
            c = ctx.node("Sub", [c, ctx.node("MatMul", [prev, _swap_last(ctx, _rows(ctx, prev, j, j + 1), nd)])])
        d = ctx.node("Sqrt", [_rows(ctx, c, j, j + 1)])
        mask = ctx.const((np.arange(n) >= j).reshape(n, 1))
        cols.append(ctx.node("Where", [mask, ctx.node("Div", [c, d]), ctx.const(np.zeros((), op.out_dtype()))]))
    L = cols[0] if n == 1 else ctx.node("Concat", cols, axis=-1)
    return [_swap_last(ctx, L, nd) if op.attr("upper", False) else L]


def _gauss_jordan(ctx, m, n, nd, want_pivots=False):
    """Reduce m (..., n, n + k) = [A | B] to [I | A^-1 B] with partial pivoting; also (pivots (..., 1, 1) each, the
    number of row swaps as a float (..., 1, 1)) when want_pivots."""
    dt = ctx.float_dtype
    r = ctx.const(np.arange(n, dtype=np.int64).reshape(n, 1))
    pivots, swaps = [], None
    for k in range(n):
        col = ctx.node("Abs", [_cols(ctx, _rows(ctx, m, k, n), k, k + 1)])  # (..., n - k, 1)
        p = ctx.node("Add", [ctx.node("ArgMax", [col], axis=nd - 2, keepdims=1, select_last_index=0),
                             ctx.const(np.asarray(k, np.int64))])  # (..., 1, 1)
        kk = ctx.const(np.asarray(k, np.int64))
        src = ctx.node("Where", [ctx.node("Equal", [r, kk]), p,
                                 ctx.node("Where", [ctx.node("Equal", [r, p]), kk, r])])  # (..., n, 1)
        src = ctx.node("Expand", [src, ctx.node("Shape", [m])])
        m = ctx.node("GatherElements", [m, src], axis=nd - 2)
        if want_pivots:
            moved = ctx.cast(ctx.node("Not", [ctx.node("Equal", [p, kk])]), dt)
            swaps = moved if swaps is None else ctx.node("Add", [swaps, moved])
        row = _rows(ctx, m, k, k + 1)
        piv = _cols(ctx, row, k, k + 1)
        pivots.append(piv)
        row = ctx.node("Div", [row, piv])
        m = ctx.node("Sub", [m, ctx.node("Mul", [_cols(ctx, m, k, k + 1), row])])
        m = ctx.node("Where", [ctx.const((np.arange(n) == k).reshape(n, 1)), row, m])
    return m, pivots, swaps


def _expand_batch(ctx, x, batch_dims, tail):
    return ctx.node("Expand", [x, ctx.shape_tensor(list(batch_dims) + list(tail), "a batch shape")])


def inv_onnx(ctx, op):
    A = op.args["A"]
    n, nd = int(A.shape[-1]), A.ndim
    _static_sizes(op, "linalg.inv", A=(-2, -1))
    a = op.input("A")
    eye = _expand_batch(ctx, ctx.const(np.eye(n, dtype=op.out_dtype())), op.in_dims("A")[:-2], [n, n])
    m, _, _ = _gauss_jordan(ctx, ctx.node("Concat", [a, eye], axis=-1), n, nd)
    return [_cols(ctx, m, n, 2 * n)]


def solve_onnx(ctx, op):
    A, B = op.args["A"], op.args["B"]
    n = int(A.shape[-1])
    left = bool(op.attr("left", True))
    a, b = op.input("A"), op.input("B")
    vector = B.ndim == 1 or (B.ndim == A.ndim - 1 and tuple(B.shape) == tuple(A.shape[:-1]))
    _static_sizes(op, "linalg.solve", A=(-2, -1), B=(-1,) if vector else (-2, -1))
    if vector:
        b = ctx.unsqueeze(b, [-1])
    out_dims = op.out_dims(0)
    batch = out_dims[:-1] if vector else out_dims[:-2]
    if not left:  # X A = B  <=>  A^T X^T = B^T
        a = _swap_last(ctx, a, A.ndim)
        b = _swap_last(ctx, b, B.ndim + int(vector))
    k = 1 if vector else int(tuple(B.shape)[-2 if not left else -1])
    nd = len(batch) + 2
    a = _expand_batch(ctx, a, batch, [n, n])
    b = _expand_batch(ctx, b, batch, [n, k])
    m, _, _ = _gauss_jordan(ctx, ctx.node("Concat", [a, b], axis=-1), n, nd)
    x = _cols(ctx, m, n, n + k)
    if not left:
        x = _swap_last(ctx, x, nd)
    return [ctx.squeeze(x, [-1]) if vector else x]


def slogdet_onnx(ctx, op):
    """sign = (-1)^swaps * prod sign(pivot), logabsdet = sum log|pivot|."""
    A = op.args["A"]
    n, nd = int(A.shape[-1]), A.ndim
    _static_sizes(op, "linalg.slogdet", A=(-2, -1))
    dt = np.dtype(op.out_dtype(1))
    _, pivots, swaps = _gauss_jordan(ctx, op.input("A"), n, nd, want_pivots=True)
    logabs = ctx.node("Log", [ctx.node("Abs", [pivots[0]])])
    sign = ctx.node("Sign", [pivots[0]])
    for p in pivots[1:]:
        logabs = ctx.node("Add", [logabs, ctx.node("Log", [ctx.node("Abs", [p])])])
        sign = ctx.node("Mul", [sign, ctx.node("Sign", [p])])
    parity = ctx.node("Sub", [ctx.const(np.asarray(1, dt)), ctx.node("Mul", [
        ctx.const(np.asarray(2, dt)), ctx.node("Mod", [swaps, ctx.const(np.asarray(2, dt))], fmod=1)])])
    sign = ctx.node("Mul", [sign, parity])
    return [ctx.squeeze(sign, [-2, -1]), ctx.squeeze(logabs, [-2, -1])]


def matrix_exp_onnx(ctx, op):
    """The kernel's algorithm (expm_array) in double: each matrix scaled by 2^-s, s = max(0, ceil(log2(|A|_1 /
    theta13))) computed at run time, the degree-13 Pade approximant solved by Gauss-Jordan, then squared s times in
    a Loop (each matrix only while the step is below its own s)."""
    from onnx import TensorProto, helper
    from .linalg_solve import _PADE13 as b, _THETA13
    A = op.args["A"]
    n, nd = int(A.shape[-1]), A.ndim
    _static_sizes(op, "linalg.matrix_exp", A=(-2, -1))
    dt = np.dtype(op.out_dtype())
    f64 = np.dtype(np.float64)

    def c(v):
        return ctx.const(np.asarray(v, f64), f64)

    x = ctx.cast(op.input("A"), f64)
    norm = ctx.reduce("ReduceMax", ctx.reduce("ReduceSum", ctx.node("Abs", [x]), [nd - 2], True), [nd - 1], True)
    ratio = ctx.node("Div", [ctx.node("Max", [norm, c(1e-300)]), c(_THETA13)])
    s = ctx.node("Ceil", [ctx.node("Div", [ctx.node("Log", [ratio]), c(np.log(2.0))])])
    bad = ctx.node("Or", [ctx.node("IsNaN", [s]), ctx.node("IsInf", [s])])  # a NaN / inf matrix is not scaled
    s = ctx.node("Where", [bad, c(0.0), ctx.node("Max", [s, c(0.0)])])  # (..., 1, 1)
    x = ctx.node("Mul", [x, ctx.node("Pow", [c(2.0), ctx.node("Neg", [s])])])
    eye = ctx.const(np.eye(n, dtype=f64), f64)
    x2 = ctx.node("MatMul", [x, x])
    x4 = ctx.node("MatMul", [x2, x2])
    x6 = ctx.node("MatMul", [x4, x2])

    def comb(*terms):
        out = None
        for coef, m in terms:
            t = ctx.node("Mul", [m, c(coef)])
            out = t if out is None else ctx.node("Add", [out, t])
        return out
    u = ctx.node("MatMul", [x, ctx.node("Add", [
        ctx.node("MatMul", [x6, comb((b[13], x6), (b[11], x4), (b[9], x2))]),
        comb((b[7], x6), (b[5], x4), (b[3], x2), (b[1], eye))])])
    v = ctx.node("Add", [ctx.node("MatMul", [x6, comb((b[12], x6), (b[10], x4), (b[8], x2))]),
                         comb((b[6], x6), (b[4], x4), (b[2], x2), (b[0], eye))])
    lhs, rhs = ctx.node("Sub", [v, u]), ctx.node("Add", [v, u])
    saved, ctx.float_dtype = ctx.float_dtype, f64
    m, _, _ = _gauss_jordan(ctx, ctx.node("Concat", [lhs, rhs], axis=-1), n, nd)
    ctx.float_dtype = saved
    r = _cols(ctx, m, n, 2 * n)
    steps = ctx.cast(ctx.reduce("ReduceMax", ctx.node("Reshape", [s, ctx.ints([-1])]), [0], False), np.int64)
    it, cond, r_in = (ctx.fresh(f"expm_{k}") for k in ("it", "cond", "r"))
    cond_out, r_out, it_f, live, sq = (ctx.fresh(f"expm_{k}") for k in ("cond_out", "r_out", "it_f", "live", "sq"))
    body = helper.make_graph(
        [helper.make_node("Identity", [cond], [cond_out], name=ctx.fresh("expm_Identity")),
         helper.make_node("Cast", [it], [it_f], name=ctx.fresh("expm_Cast"), to=TensorProto.DOUBLE),
         helper.make_node("Less", [it_f, s], [live], name=ctx.fresh("expm_Less")),
         helper.make_node("MatMul", [r_in, r_in], [sq], name=ctx.fresh("expm_MatMul")),
         helper.make_node("Where", [live, sq, r_in], [r_out], name=ctx.fresh("expm_Where"))],
        ctx.fresh("expm_square"),
        [helper.make_tensor_value_info(it, TensorProto.INT64, []),
         helper.make_tensor_value_info(cond, TensorProto.BOOL, []),
         helper.make_tensor_value_info(r_in, TensorProto.DOUBLE, None)],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(r_out, TensorProto.DOUBLE, None)])
    r = ctx.node("Loop", [steps, ctx.const(np.asarray(True)), r], body=body)
    return [ctx.cast(r, dt) if dt != f64 else r]


def qr_onnx(ctx, op):
    """LAPACK's geqr2 in double: one Householder reflection per column, beta = -sign(alpha) |(alpha, x)| (so R's
    diagonal has LAPACK's signs; alpha = 0 counts as positive), tau = 0 where the column below is already 0; Q the
    product of the reflections applied to I. R is upper triangular by construction (the rounding below cleared)."""
    A = op.args["A"]
    mode = op.attr("mode", "reduced")
    m, n, nd = int(A.shape[-2]), int(A.shape[-1]), A.ndim
    _static_sizes(op, "linalg.qr", A=(-2, -1))
    k = min(m, n)
    dt = np.dtype(op.out_dtype(1))
    f64 = np.dtype(np.float64)

    def c(v):
        return ctx.const(np.asarray(v, f64), f64)

    rows = np.arange(m).reshape(m, 1)
    r = ctx.cast(op.input("A"), f64)
    q = None if mode == "r" else _expand_batch(ctx, ctx.const(np.eye(m, dtype=f64), f64), op.in_dims("A")[:-2], [m, m])
    for j in range(k):
        col = _cols(ctx, r, j, j + 1)  # (..., m, 1)
        alpha = _rows(ctx, col, j, j + 1)  # (..., 1, 1)
        x = ctx.node("Mul", [col, ctx.const((rows > j).astype(f64), f64)])
        xnorm = ctx.node("Sqrt", [ctx.reduce("ReduceSum", ctx.node("Mul", [x, x]), [nd - 2], True)])
        sign = ctx.node("Where", [ctx.node("GreaterOrEqual", [alpha, c(0.0)]), c(1.0), c(-1.0)])
        beta = ctx.node("Neg", [ctx.node("Mul", [sign, ctx.node("Sqrt", [ctx.node("Add", [
            ctx.node("Mul", [alpha, alpha]), ctx.node("Mul", [xnorm, xnorm])])])])])
        zero = ctx.node("Equal", [xnorm, c(0.0)])
        tau = ctx.node("Where", [zero, c(0.0), ctx.node("Div", [ctx.node("Sub", [beta, alpha]), beta])])
        denom = ctx.node("Where", [zero, c(1.0), ctx.node("Sub", [alpha, beta])])
        v = ctx.node("Add", [ctx.const((rows == j).astype(f64), f64), ctx.node("Div", [x, denom])])  # (..., m, 1)
        vt = _swap_last(ctx, v, nd)
        r = ctx.node("Sub", [r, ctx.node("Mul", [tau, ctx.node("MatMul", [v, ctx.node("MatMul", [vt, r])])])])
        if q is not None:
            q = ctx.node("Sub", [q, ctx.node("Mul", [tau, ctx.node("MatMul", [ctx.node("MatMul", [q, v]), vt])])])
    r = ctx.node("Mul", [r, ctx.const(np.triu(np.ones((m, n))).astype(f64), f64)])
    if mode != "complete":
        r = _rows(ctx, r, 0, k)
        q = None if q is None else _cols(ctx, q, 0, k)
    r = ctx.cast(r, dt) if dt != f64 else r
    if q is None:
        return [ctx.const(np.zeros((0,), dt)), r]
    return [ctx.cast(q, dt) if dt != f64 else q, r]
