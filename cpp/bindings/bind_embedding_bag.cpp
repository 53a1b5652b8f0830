// forgegrad._C.embedding_bag: F.embedding_bag on float32 tables (the kernels of
// cpp/kernels/per_isa/embedding_bag.cpp, their order and thread contract there). Every array, index and bag
// boundary is checked here before a kernel runs; the backward groups the positions by row (a stable counting sort).
// The kernels read copies of the indices and bag boundaries checked here, never the caller's arrays: they run
// without the GIL, and another Python thread writing those arrays meanwhile must not move a checked index.
#include <string>
#include <vector>

#include "forgegrad/bindings.h"
#include "forgegrad/dispatch.h"
#include "forgegrad/py_array.h"

namespace fg {

FG_KERNEL(void, embedding_bag_forward_f32,
          (const float* weight, int64_t D, const int64_t* idx, const int64_t* bag_starts, int64_t B, const float* psw,
           int mode, int64_t padding_idx, float* out, int64_t* counts, int64_t* arg),
          (weight, D, idx, bag_starts, B, psw, mode, padding_idx, out, counts, arg))

FG_KERNEL(void, embedding_bag_backward_f32,
          (const float* grad, int64_t D, const int64_t* bag_of, const float* scale, const int64_t* row_starts,
           const int64_t* order, int64_t V, float* grad_weight),
          (grad, D, bag_of, scale, row_starts, order, V, grad_weight))

FG_KERNEL(void, embedding_bag_max_backward_f32,
          (const float* grad, const int64_t* rows, int64_t B, int64_t D, int64_t V, float* grad_weight),
          (grad, rows, B, D, V, grad_weight))

FG_KERNEL(void, embedding_bag_psw_backward_f32,
          (const float* grad, const float* weight, int64_t D, const int64_t* idx, const int64_t* bag_of, int64_t n,
           int64_t padding_idx, float* grad_psw),
          (grad, weight, D, idx, bag_of, n, padding_idx, grad_psw))

}  // namespace fg

namespace py = pybind11;
using fg::bind::ArrayArg;

namespace {

constexpr int64_t kMaxBag = 0x7FFFFFFF;  // the max kernel keeps a position within its bag in 32 bits

std::string num(int64_t v) { return std::to_string(v); }

// indices (n,) in [0, V); bag_starts (B + 1,): 0, non-decreasing, n; padding_idx -1 (none) or in [0, V).
// idx and starts are copies, checked: what the kernels read (see the top of this file).
struct Bags {
  std::vector<int64_t> idx, starts;
  int64_t n = 0, B = 0;
  const int64_t* i64() const { return idx.data(); }
  const int64_t* s64() const { return starts.data(); }
};

Bags check_bags(const char* fn, const py::array& indices, const py::array& bag_starts, int64_t V, int64_t padding_idx) {
  Bags k;
  ArrayArg I = fg::bind::i64_arg(indices, "indices", 1), S = fg::bind::i64_arg(bag_starts, "bag_starts", 1);
  k.n = I.dim(0);
  if (S.dim(0) < 1)
    throw py::value_error(std::string(fn) + ": bag_starts must hold at least one position (B + 1 of them)");
  k.B = S.dim(0) - 1;
  k.idx.assign(I.i64(), I.i64() + k.n);
  k.starts.assign(S.i64(), S.i64() + k.B + 1);
  const int64_t *idx = k.i64(), *s = k.s64();
  for (int64_t p = 0; p < k.n; ++p) {
    if (idx[p] < 0 || idx[p] >= V)
      throw py::index_error(std::string(fn) + ": indices[" + num(p) + "] = " + num(idx[p]) + " is out of range [0, " +
                            num(V) + ")");
  }
  if (s[0] != 0) throw py::value_error(std::string(fn) + ": bag_starts[0] must be 0, got " + num(s[0]));
  if (s[k.B] != k.n)
    throw py::value_error(std::string(fn) + ": bag_starts[-1] must be the number of indices " + num(k.n) + ", got " +
                          num(s[k.B]));
  for (int64_t b = 0; b < k.B; ++b) {
    if (s[b + 1] < s[b])
      throw py::value_error(std::string(fn) + ": bag_starts must be non-decreasing, got bag_starts[" + num(b) +
                            "] = " + num(s[b]) + " > bag_starts[" + num(b + 1) + "] = " + num(s[b + 1]));
    if (s[b + 1] - s[b] > kMaxBag)
      throw py::value_error(std::string(fn) + ": a bag must hold fewer than 2**31 indices, bag " + num(b) + " holds " +
                            num(s[b + 1] - s[b]));
  }
  if (padding_idx < -1 || padding_idx >= V)
    throw py::value_error(std::string(fn) + ": padding_idx must be -1 (none) or in [0, " + num(V) + "), got " +
                          num(padding_idx));
  return k;
}

// The bag of each position.
std::vector<int64_t> bag_of(const Bags& k) {
  std::vector<int64_t> of(static_cast<size_t>(k.n));
  const int64_t* s = k.s64();
  for (int64_t b = 0; b < k.B; ++b)
    for (int64_t p = s[b]; p < s[b + 1]; ++p) of[p] = b;
  return of;
}

void forward(const py::array& weight, const py::array& indices, const py::array& bag_starts,
             const py::object& per_sample_weights, int mode, int64_t padding_idx, const py::array& out,
             const py::array& counts, const py::object& arg) {
  const char* fn = "embedding_bag_forward_f32";
  ArrayArg W = fg::bind::f32_arg(weight, "weight", 2);
  const int64_t V = W.dim(0), D = W.dim(1);
  Bags k = check_bags(fn, indices, bag_starts, V, padding_idx);
  if (mode < 0 || mode > 2)
    throw py::value_error(std::string(fn) + ": mode must be 0 (sum), 1 (mean) or 2 (max), got " + num(mode));
  ArrayArg O = fg::bind::f32_arg(out, "out", 2, fg::bind::kContiguous, true);
  ArrayArg C = fg::bind::i64_arg(counts, "counts", 1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(O, "out", {k.B, D});
  fg::bind::expect_shape(C, "counts", {k.B});
  const float* psw = nullptr;
  ArrayArg P, A;
  if (!per_sample_weights.is_none()) {
    if (mode != 0) throw py::value_error(std::string(fn) + ": per_sample_weights needs mode 0 (sum)");
    P = fg::bind::f32_arg(per_sample_weights.cast<py::array>(), "per_sample_weights", 1);
    fg::bind::expect_shape(P, "per_sample_weights", {k.n});
    psw = P.f32();
  }
  int64_t* argp = nullptr;
  if ((mode == 2) != !arg.is_none())
    throw py::value_error(std::string(fn) + ": arg must be an int64 array (B, D) for mode 2 (max) and None else");
  if (mode == 2) {
    A = fg::bind::i64_arg(arg.cast<py::array>(), "arg", 2, fg::bind::kContiguous, true);
    fg::bind::expect_shape(A, "arg", {k.B, D});
    argp = A.i64();
  }
  fg::bind::check_no_overlap(fn,
                             {{weight, "weight"},
                              {indices, "indices"},
                              {bag_starts, "bag_starts"},
                              {per_sample_weights, "per_sample_weights"}},
                             {{out, "out"}, {counts, "counts"}, {arg, "arg"}});
  py::gil_scoped_release release;
  fg::embedding_bag_forward_f32(W.f32(), D, k.i64(), k.s64(), k.B, psw, mode, padding_idx, O.f32(), C.i64(), argp);
}

void backward(const py::array& grad, const py::array& indices, const py::array& bag_starts,
              const py::object& per_sample_weights, bool mean, const py::object& freq, int64_t padding_idx,
              const py::array& grad_weight) {
  const char* fn = "embedding_bag_backward_f32";
  ArrayArg GW = fg::bind::f32_arg(grad_weight, "grad_weight", 2, fg::bind::kContiguous, true);
  const int64_t V = GW.dim(0), D = GW.dim(1);
  Bags k = check_bags(fn, indices, bag_starts, V, padding_idx);
  ArrayArg G = fg::bind::f32_arg(grad, "grad", 2);
  fg::bind::expect_shape(G, "grad", {k.B, D});
  ArrayArg P, F;
  if (!per_sample_weights.is_none()) {
    P = fg::bind::f32_arg(per_sample_weights.cast<py::array>(), "per_sample_weights", 1);
    fg::bind::expect_shape(P, "per_sample_weights", {k.n});
  }
  if (!freq.is_none()) {
    F = fg::bind::i64_arg(freq.cast<py::array>(), "freq", 1);
    fg::bind::expect_shape(F, "freq", {V});
  }
  fg::bind::check_no_overlap(fn,
                             {{grad, "grad"},
                              {indices, "indices"},
                              {bag_starts, "bag_starts"},
                              {per_sample_weights, "per_sample_weights"},
                              {freq, "freq"}},
                             {{grad_weight, "grad_weight"}});
  // nothing to write; and a (V, 0) table holds no memory at any V, while the row grouping below takes O(V)
  if (GW.size == 0) return;
  const int64_t* idx = k.i64();
  const int64_t* s = k.s64();
  std::vector<int64_t> of = bag_of(k);
  // each kept position's factor: its weight, 1 / its bag's count (mean), 1 / its row's frequency; rounded once
  std::vector<float> scale;
  if (P.ptr || mean || F.ptr) {
    scale.resize(static_cast<size_t>(k.n));
    for (int64_t b = 0; b < k.B; ++b) {
      int64_t cnt = 0;
      for (int64_t p = s[b]; p < s[b + 1]; ++p) cnt += idx[p] != padding_idx;
      const double bag = mean && cnt ? 1.0 / static_cast<double>(cnt) : 1.0;
      for (int64_t p = s[b]; p < s[b + 1]; ++p) {
        double f = bag;
        if (P.ptr) f *= static_cast<double>(P.f32()[p]);
        if (F.ptr && F.i64()[idx[p]] > 0) f /= static_cast<double>(F.i64()[idx[p]]);
        scale[p] = static_cast<float>(f);
      }
    }
  }
  std::vector<int64_t> starts(static_cast<size_t>(V) + 1, 0), order;
  for (int64_t p = 0; p < k.n; ++p) starts[idx[p] + 1] += idx[p] != padding_idx;
  for (int64_t v = 0; v < V; ++v) starts[v + 1] += starts[v];
  order.resize(static_cast<size_t>(starts[V]));
  {
    std::vector<int64_t> next(starts.begin(), starts.end() - 1);
    for (int64_t p = 0; p < k.n; ++p)
      if (idx[p] != padding_idx) order[next[idx[p]]++] = p;  // ascending p within a row: stable
  }
  py::gil_scoped_release release;
  fg::embedding_bag_backward_f32(G.f32(), D, of.data(), scale.empty() ? nullptr : scale.data(), starts.data(),
                                 order.data(), V, GW.f32());
}

void max_backward(const py::array& grad, const py::array& arg, const py::array& indices, const py::array& grad_weight) {
  const char* fn = "embedding_bag_max_backward_f32";
  ArrayArg GW = fg::bind::f32_arg(grad_weight, "grad_weight", 2, fg::bind::kContiguous, true);
  ArrayArg G = fg::bind::f32_arg(grad, "grad", 2), A = fg::bind::i64_arg(arg, "arg", 2);
  ArrayArg I = fg::bind::i64_arg(indices, "indices", 1);
  const int64_t V = GW.dim(0), D = GW.dim(1), B = G.dim(0), n = I.dim(0);
  fg::bind::expect_shape(G, "grad", {B, D});
  fg::bind::expect_shape(A, "arg", {B, D});
  const std::vector<int64_t> idx(I.i64(), I.i64() + n);
  for (int64_t p = 0; p < n; ++p) {
    if (idx[p] < 0 || idx[p] >= V)
      throw py::index_error(std::string(fn) + ": indices[" + num(p) + "] = " + num(idx[p]) + " is out of range [0, " +
                            num(V) + ")");
  }
  // the row of each maximum, from the copies: what the kernel reads
  std::vector<int64_t> rows(static_cast<size_t>(A.size));
  const int64_t* a = A.i64();
  for (int64_t i = 0; i < A.size; ++i) {
    const int64_t at = a[i];
    if (at < -1 || at >= n)
      throw py::index_error(std::string(fn) + ": arg holds " + num(at) + ", expected -1 or a position in [0, " +
                            num(n) + ")");
    rows[i] = at < 0 ? -1 : idx[at];
  }
  fg::bind::check_no_overlap(fn, {{grad, "grad"}, {arg, "arg"}, {indices, "indices"}}, {{grad_weight, "grad_weight"}});
  py::gil_scoped_release release;
  fg::embedding_bag_max_backward_f32(G.f32(), rows.data(), B, D, V, GW.f32());
}

void psw_backward(const py::array& grad, const py::array& weight, const py::array& indices, const py::array& bag_starts,
                  int64_t padding_idx, const py::array& grad_psw) {
  const char* fn = "embedding_bag_psw_backward_f32";
  ArrayArg W = fg::bind::f32_arg(weight, "weight", 2);
  const int64_t V = W.dim(0), D = W.dim(1);
  Bags k = check_bags(fn, indices, bag_starts, V, padding_idx);
  ArrayArg G = fg::bind::f32_arg(grad, "grad", 2);
  fg::bind::expect_shape(G, "grad", {k.B, D});
  ArrayArg O = fg::bind::f32_arg(grad_psw, "grad_psw", 1, fg::bind::kContiguous, true);
  fg::bind::expect_shape(O, "grad_psw", {k.n});
  fg::bind::check_no_overlap(fn, {{grad, "grad"}, {weight, "weight"}, {indices, "indices"}, {bag_starts, "bag_starts"}},
                             {{grad_psw, "grad_psw"}});
  std::vector<int64_t> of = bag_of(k);
  py::gil_scoped_release release;
  fg::embedding_bag_psw_backward_f32(G.f32(), W.f32(), D, k.i64(), of.data(), k.n, padding_idx, O.f32());
}

void bind(py::module_& m) {
  m.def("forward_f32", &forward, py::arg("weight"), py::arg("indices"), py::arg("bag_starts"),
        py::arg("per_sample_weights"), py::arg("mode"), py::arg("padding_idx"), py::arg("out"), py::arg("counts"),
        py::arg("arg"),
        "out (B, D) = each bag's rows of float32 weight (V, D) summed (mode 0, times per_sample_weights (n,) or "
        "None), averaged (1) or maximised (2); bag b holds indices[bag_starts[b]:bag_starts[b + 1]] less the "
        "padding_idx entries (-1: none); counts (B,) int64 = the entries kept; arg (B, D) int64 (mode 2, else None) "
        "= the first position of each maximum (a NaN only as a bag's first kept entry, as torch's), -1 for an empty "
        "bag. Empty bags give 0. Sums in float64. "
        "Bit-identical for any thread count.");
  m.def("backward_f32", &backward, py::arg("grad"), py::arg("indices"), py::arg("bag_starts"),
        py::arg("per_sample_weights"), py::arg("mean"), py::arg("freq"), py::arg("padding_idx"), py::arg("grad_weight"),
        "grad_weight (V, D) of mode sum (mean=False) or mean: row v sums grad[bag of p] times per_sample_weights[p] "
        "(or None), 1 / the bag's count (mean) and 1 / freq[v] (freq (V,) int64 or None) over the kept positions p "
        "of row v in ascending order. Bit-identical for any thread count.");
  m.def("max_backward_f32", &max_backward, py::arg("grad"), py::arg("arg"), py::arg("indices"), py::arg("grad_weight"),
        "grad_weight (V, D) of mode max: grad[b, c] added to grad_weight[indices[arg[b, c]], c] (arg -1: none), "
        "bags in ascending order. Bit-identical for any thread count.");
  m.def("psw_backward_f32", &psw_backward, py::arg("grad"), py::arg("weight"), py::arg("indices"),
        py::arg("bag_starts"), py::arg("padding_idx"), py::arg("grad_psw"),
        "grad_psw (n,) = dot(grad[bag of p], weight[indices[p]]) (float64 partial sums), 0 at padding_idx "
        "entries. Bit-identical for any thread count.");
}

}  // namespace

FG_REGISTER_BINDINGS(embedding_bag, bind)
