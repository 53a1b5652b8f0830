// forgegrad._C.special_poly: the orthogonal polynomials' recurrences (forgegrad/special_poly.h) on 1-D
// float64 arrays; python/forgegrad/ops/_special_poly.py broadcasts and prepares them.
#include <string>

#include "forgegrad/bindings.h"
#include "forgegrad/py_array.h"
#include "forgegrad/special_poly.h"

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

py::array_t<double> recurrence(int kind, const py::array& coef, const py::array& n, const py::array& q0,
                               const py::array& q1, int64_t start, bool stop_nan) {
  if (kind < 0 || kind >= fg::kPolyKinds)
    throw py::value_error("special_poly.recurrence: kind must be in [0, " + std::to_string(int(fg::kPolyKinds)) +
                          "), got " + std::to_string(kind));
  if (start < 1) throw py::value_error("special_poly.recurrence: start must be >= 1, got " + std::to_string(start));
  ArrayArg C = fg::bind::f64_arg(coef, "coef", 1), N = fg::bind::f64_arg(n, "n", 1);
  ArrayArg P = fg::bind::f64_arg(q0, "q0", 1), Q = fg::bind::f64_arg(q1, "q1", 1);
  for (auto [a, name] : {std::pair{&N, "n"}, std::pair{&P, "q0"}, std::pair{&Q, "q1"}})
    fg::bind::expect_shape(*a, name, C.shape);
  py::array_t<double> out(C.shape);
  double* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    fg::poly_recurrence(kind, C.f64(), N.f64(), P.f64(), Q.f64(), C.size, start, stop_nan, o);
  }
  return out;
}

void bind(py::module_& m) {
  m.def("recurrence", &recurrence, py::arg("kind"), py::arg("coef"), py::arg("n"), py::arg("q0"), py::arg("q1"),
        py::arg("start"), py::arg("stop_nan"),
        "q_k for k = start .. n[i] of one orthogonal polynomial's three-term recurrence per element (kind: 0 "
        "Chebyshev with coef = 2y, 1 Hermite H, 2 Hermite He, 3 Laguerre, 4 Legendre; coef = x for 1-4), from "
        "q_{start-2} = q0[i], q_{start-1} = q1[i]; stops where q turns NaN when stop_nan. float64 1-D arrays of "
        "one length; returns the last q per element (q1[i] where n[i] < start).");
}

}  // namespace

FG_REGISTER_BINDINGS(special_poly, bind)
