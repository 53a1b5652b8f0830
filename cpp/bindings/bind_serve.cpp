// forgegrad._C.serve: request-body decoding for forgegrad serve (cpp/core/json_numbers.cpp).
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>

#include "forgegrad/bindings.h"
#include "forgegrad/json_numbers.h"
#include "forgegrad/py_array.h"

namespace py = pybind11;

namespace {

// The numbers of body[start:stop] (one JSON array) as a float64 (or float32) array, or None where
// the text is anything else. The GIL is released while parsing: bytes are immutable, and `body` holds them.
py::object json_number_array(const py::bytes& body, int64_t start, int64_t stop, bool float32) {
  char* data = nullptr;
  Py_ssize_t size = 0;
  if (PyBytes_AsStringAndSize(body.ptr(), &data, &size) != 0) throw py::error_already_set();
  if (stop < 0) stop = size;
  if (start < 0 || start > stop || stop > size)
    throw py::value_error("json_number_array: need 0 <= start <= stop <= len(body) (" + std::to_string(size) +
                          "), got start=" + std::to_string(start) + ", stop=" + std::to_string(stop));
  fg::json::NumberArray parsed;
  bool ok;
  {
    py::gil_scoped_release release;
    ok = fg::json::parse_number_array(data + start, static_cast<std::size_t>(stop - start), parsed);
  }
  if (!ok) return py::none();
  const std::vector<py::ssize_t> shape(parsed.shape.begin(), parsed.shape.end());
  if (!float32) {
    py::array_t<double> out(shape);
    std::memcpy(out.mutable_data(), parsed.values.data(), parsed.values.size() * sizeof(double));
    return std::move(out);
  }
  for (double v : parsed.values)
    if (!(std::fabs(v) <= double(FLT_MAX))) return py::none();  // the caller words the overflow
  py::array_t<float> out(shape);
  float* dst = out.mutable_data();
  for (std::size_t i = 0; i < parsed.values.size(); ++i) dst[i] = static_cast<float>(parsed.values[i]);
  return std::move(out);
}

void bind(py::module_& m) {
  m.def("json_number_array", &json_number_array, py::arg("body"), py::arg("start") = 0, py::arg("stop") = -1,
        py::arg("float32") = false,
        "body[start:stop] (stop -1: the end) parsed as one JSON array of numbers: a float64 array of its "
        "shape, each number as Python's float() (an integer literal of up to 15 digits as int()) gives it; "
        "None for any other text (other JSON values, ragged or empty arrays, integers past 15 digits, "
        "numbers beyond a double's normal range, malformed JSON), which the caller's generic JSON path "
        "then decodes or refuses. float32: the float64 values rounded to float32 (as numpy's astype), and None "
        "where one is beyond float32's range.");
}

}  // namespace

FG_REGISTER_BINDINGS(serve, bind)
