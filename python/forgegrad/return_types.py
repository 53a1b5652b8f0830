"""Named tuples that ops return, as torch.return_types: ``values, indices = x.max(1)`` and
``x.max(1).indices`` both work (a plain tuple otherwise)."""
from collections import namedtuple

__all__ = ["max", "min", "sort", "topk", "kthvalue", "cummax", "cummin"]

max = namedtuple("max", ["values", "indices"])  # noqa: A001  (torch.return_types.max)
min = namedtuple("min", ["values", "indices"])  # noqa: A001
sort = namedtuple("sort", ["values", "indices"])
topk = namedtuple("topk", ["values", "indices"])
kthvalue = namedtuple("kthvalue", ["values", "indices"])
cummax = namedtuple("cummax", ["values", "indices"])
cummin = namedtuple("cummin", ["values", "indices"])

# forgegrad.linalg's (torch.return_types' names and fields)
linalg_slogdet = namedtuple("linalg_slogdet", ["sign", "logabsdet"])
linalg_inv_ex = namedtuple("linalg_inv_ex", ["inverse", "info"])
linalg_cholesky_ex = namedtuple("linalg_cholesky_ex", ["L", "info"])
linalg_qr = namedtuple("linalg_qr", ["Q", "R"])
linalg_eigh = namedtuple("linalg_eigh", ["eigenvalues", "eigenvectors"])
linalg_eig = namedtuple("linalg_eig", ["eigenvalues", "eigenvectors"])
linalg_svd = namedtuple("linalg_svd", ["U", "S", "Vh"])
linalg_lstsq = namedtuple("linalg_lstsq", ["solution", "residuals", "rank", "singular_values"])
linalg_lu_factor = namedtuple("linalg_lu_factor", ["LU", "pivots"])
linalg_lu_factor_ex = namedtuple("linalg_lu_factor_ex", ["LU", "pivots", "info"])
linalg_lu = namedtuple("linalg_lu", ["P", "L", "U"])
lu_unpack = namedtuple("lu_unpack", ["P", "L", "U"])
_lu_with_info = namedtuple("_lu_with_info", ["LU", "pivots", "info"])  # torch.lu(get_infos=True)
linalg_solve_ex = namedtuple("linalg_solve_ex", ["result", "info"])
linalg_ldl_factor = namedtuple("linalg_ldl_factor", ["LD", "pivots"])
linalg_ldl_factor_ex = namedtuple("linalg_ldl_factor_ex", ["LD", "pivots", "info"])
geqrf = namedtuple("geqrf", ["a", "tau"])
svd = namedtuple("svd", ["U", "S", "V"])
qr = namedtuple("qr", ["Q", "R"])
triangular_solve = namedtuple("triangular_solve", ["solution", "cloned_coefficient"])
frexp = namedtuple("frexp", ["mantissa", "exponent"])
__all__ += ["linalg_slogdet", "linalg_inv_ex", "linalg_cholesky_ex", "linalg_qr", "linalg_eigh", "linalg_svd",
            "linalg_lstsq", "linalg_lu_factor", "linalg_lu_factor_ex", "linalg_lu", "lu_unpack", "linalg_solve_ex",
            "linalg_ldl_factor", "linalg_ldl_factor_ex", "geqrf", "svd", "qr", "triangular_solve", "frexp"]
