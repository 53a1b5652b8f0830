"""The fuzz harness's checks for decompositions whose factors are not unique (fuzz_decompositions.py): they accept
forgegrad's factors where torch's differ legitimately and reject factors that are wrong."""

import numpy as np
import pytest

import forgegrad as fg

import fuzz_decompositions as D

torch = pytest.importorskip("torch")


class Mismatch(Exception):
    def __init__(self, outcome, detail):
        super().__init__(detail)
        self.outcome = outcome


def _repeated_rows():
    rng = np.random.default_rng(1)
    a = np.repeat(rng.standard_normal((1, 4)), 5, axis=0).astype(np.float32)
    a[2] = rng.standard_normal(4)
    return a


@pytest.mark.parametrize("full", [True, False])
def test_svd_of_repeated_rows_is_judged_by_its_definition(full):
    # the seed-909 finding: rank 2 of 4, the null space's singular vectors are LAPACK's choice
    a = _repeated_rows()
    got = fg.linalg.svd(fg.tensor(a), full_matrices=full)
    want = torch.linalg.svd(torch.from_numpy(a), full_matrices=full)
    assert not np.allclose(got[0].numpy(), want[0].numpy(), atol=1e-3)  # element-wise they differ
    assert D.check("linalg_svd", [a], {"full_matrices": full}, got, want, Mismatch)[0] == "equal"
    u, s, vh = (t.numpy().copy() for t in got)
    u[:, 0] *= -1.0  # a sign flipped in U alone: no longer A's factors
    with pytest.raises(Mismatch, match="differs from A"):
        D.check("linalg_svd", [a], {"full_matrices": full}, (u, s, vh), want, Mismatch)
    with pytest.raises(Mismatch, match="singular values"):
        D.check("linalg_svd", [a], {"full_matrices": full}, (got[0], got[1].numpy() * 1.01, got[2]), want, Mismatch)


@pytest.mark.parametrize("mode", ["reduced", "complete", "r"])
def test_qr_of_a_rank_deficient_matrix_is_judged_by_its_definition(mode):
    a = _repeated_rows().T.copy()  # 4 x 5 of rank 2
    got = fg.linalg.qr(fg.tensor(a), mode=mode)
    assert D.check("linalg_qr", [a], {"mode": mode}, got, None, Mismatch)[0] == "equal"
    q, r = (t.numpy().copy() for t in got)
    r[0, 1] += 0.5
    with pytest.raises(Mismatch, match="product"):
        D.check("linalg_qr", [a], {"mode": mode}, (q, r), None, Mismatch)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("mode", ["reduced", "complete", "r"])
def test_qr_with_a_non_finite_pivot_equals_torch_before_it(value, mode):
    # an infinite first entry: reference LAPACK (numpy, forgegrad) spreads the NaN reflector over row 0 of R,
    # torch's LAPACK over the whole trailing block
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 4, 3)).astype(np.float32)
    a[1, 0, 0] = value
    a[0, 2, 1] = value  # a later column: the factors of column 0 must equal torch's
    got = fg.linalg.qr(fg.tensor(a), mode=mode)
    want = torch.linalg.qr(torch.from_numpy(a), mode=mode)
    assert D.check("linalg_qr", [a], {"mode": mode}, got, want, Mismatch)[0] == "equal"
    q, r = (t.numpy().copy() for t in got)
    r[0, 0, 0] *= 2.0  # before the non-finite column: must equal torch's
    with pytest.raises(Mismatch, match="before its first non-finite column"):
        D.check("linalg_qr", [a], {"mode": mode}, (q, r), want, Mismatch)
    q, r = (t.numpy().copy() for t in got)
    r[1, 0, 0] = 1.0  # a finite factor made up from the infinity
    if q.size:
        q[1, :, 0] = 0.5
    with pytest.raises(Mismatch, match="all finite"):
        D.check("linalg_qr", [a], {"mode": mode}, (q, r), want, Mismatch)


@pytest.mark.parametrize("name", ["linalg_svd", "linalg_qr"])
def test_factors_past_float32_s_range_are_checked_on_an_exactly_scaled_matrix(name):
    # the seed-909 run's bigval cases: entries of 3e38 make S / R's largest values inf in float32
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 3)).astype(np.float32)
    a[2, 0] = a[3, 2] = a[4, 2] = 3e38
    fn = fg.linalg.svd if name == "linalg_svd" else fg.linalg.qr
    kwargs = {"full_matrices": False} if name == "linalg_svd" else {"mode": "reduced"}
    got = fn(fg.tensor(a), **kwargs)
    assert np.isinf(got[1].numpy()).any()
    assert D.check(name, [a], kwargs, got, None, Mismatch)[0] == "equal"
    bad = [t.numpy().copy() for t in got]
    bad[0][1, :] *= -1.0  # a row of U / Q negated: not the factors of the scaled matrix
    with pytest.raises(Mismatch, match="scaled back"):
        D.check(name, [a], kwargs, tuple(bad), None, Mismatch)
