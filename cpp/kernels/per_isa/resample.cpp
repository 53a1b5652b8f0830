// Separable 2-d resampling of float32 planes (P, H, W), C-contiguous: F.interpolate's nearest /
// nearest-exact / bilinear and F.pad's four modes (python/forgegrad/ops/resample.py, pad.py).
//
// Each axis is a map of T taps (python/forgegrad/ops/_resample_maps.py, the reference): output
// position j reads idx[k * n_out + j] with weight w[k * n_out + j] (w null: all ones). In the forward
// an unweighted one-tap map may hold -1: that output position is `fill` (constant pad).
//   forward:  width first, then height, as numpy's apply (torch's order): per plane a temporary
//             (Hi, Wo) of width sums x0 * w0 + x1 * w1 + ..., then out rows t0 * wh0 + t1 * wh1 + ...
//             (no fma: the per-ISA flags keep mul and add apart, so the bits are numpy's).
//   backward: the transpose (maps without -1), height first, then width, as numpy's adjoint: every
//             source starts at 0 and adds its contributions (g * w) in increasing output position, one
//             output's taps in tap order, the order of numpy's levels, so the bits are numpy's too.
// An identity axis (one unweighted tap, idx[j] = j, same length) is skipped as numpy skips it.
//
// Threads: planes only; each plane is one thread's, its sums in the fixed order above, so every
// result is bit-identical for any thread count.
//
// Only bind_resample.cpp calls these kernels; their FG_KERNEL declarations live there.
#include <cstring>
#include <vector>

#include "forgegrad/parallel.h"

namespace fg {
namespace FG_ISA_NS {
namespace {

bool is_identity(const int64_t* idx, const float* w, int64_t T, int64_t n_in, int64_t n_out) {
  if (T != 1 || w != nullptr || n_in != n_out) return false;
  for (int64_t j = 0; j < n_out; ++j)
    if (idx[j] != j) return false;
  return true;
}

// An unweighted one-tap map as runs of consecutive sources (a pad: the copied middle and its borders) or of
// -1 (src = -1): a copy per run instead of a gather per position. Empty where the runs would be short (nearest
// by 2: runs of 1), which the gather loops serve better.
struct Run {
  int64_t j, len, src;
};

std::vector<Run> runs_of(const int64_t* idx, const float* w, int64_t T, int64_t n_out) {
  std::vector<Run> runs;
  if (T != 1 || w != nullptr) return runs;
  for (int64_t j = 0; j < n_out; ++j) {
    if (!runs.empty()) {
      Run& r = runs.back();
      if ((r.src < 0 && idx[j] < 0) || (r.src >= 0 && idx[j] == r.src + r.len)) {
        ++r.len;
        continue;
      }
    }
    if (static_cast<int64_t>(runs.size()) * 8 > n_out) return {};
    runs.push_back({j, 1, idx[j] < 0 ? -1 : idx[j]});
  }
  if (static_cast<int64_t>(runs.size()) * 8 > n_out) return {};
  return runs;
}

// One row along the width: t[j] = sum_k row[iw[k, j]] * ww[k, j] (fill where an unweighted index is -1).
void width_row(const float* row, const int64_t* iw, const float* ww, int64_t Tw, int64_t Wo, float fill,
               const std::vector<Run>& runs, float* t) {
  if (!runs.empty()) {
    for (const Run& r : runs) {
      if (r.src < 0) {
        for (int64_t q = 0; q < r.len; ++q) t[r.j + q] = fill;
      } else {
        std::memcpy(t + r.j, row + r.src, static_cast<size_t>(r.len) * sizeof(float));
      }
    }
    return;
  }
  if (ww == nullptr && Tw == 1) {
    for (int64_t j = 0; j < Wo; ++j) {
      const int64_t s = iw[j];
      t[j] = s < 0 ? fill : row[s];
    }
    return;
  }
  if (ww == nullptr) {
    for (int64_t j = 0; j < Wo; ++j) {
      float acc = row[iw[j]];
      for (int64_t k = 1; k < Tw; ++k) acc = acc + row[iw[k * Wo + j]];
      t[j] = acc;
    }
    return;
  }
  if (Tw == 2) {
    const int64_t *i0 = iw, *i1 = iw + Wo;
    const float *w0 = ww, *w1 = ww + Wo;
    for (int64_t j = 0; j < Wo; ++j) t[j] = row[i0[j]] * w0[j] + row[i1[j]] * w1[j];
    return;
  }
  for (int64_t j = 0; j < Wo; ++j) {
    float acc = row[iw[j]] * ww[j];
    for (int64_t k = 1; k < Tw; ++k) acc = acc + row[iw[k * Wo + j]] * ww[k * Wo + j];
    t[j] = acc;
  }
}

int64_t max_i(int64_t a, int64_t b) { return a > b ? a : b; }

}  // namespace

void resample2d_forward(const float* x, int64_t P, int64_t Hi, int64_t Wi, const int64_t* ih, const float* wh,
                        int64_t Th, int64_t Ho, const int64_t* iw, const float* ww, int64_t Tw, int64_t Wo, float fill,
                        float* y) {
  const bool id_w = is_identity(iw, ww, Tw, Wi, Wo);
  // Only the input rows some output row reads get a width pass (a downsample, a crop).
  std::vector<char> needed(static_cast<size_t>(Hi), 0);
  for (int64_t e = 0; e < Th * Ho; ++e)
    if (ih[e] >= 0) needed[static_cast<size_t>(ih[e])] = 1;
  const std::vector<Run> runs_w = runs_of(iw, ww, Tw, Wo);
  // A one-tap height map over width runs (the pads): each output row copied straight from its input row.
  const bool direct = !id_w && !runs_w.empty() && Th == 1 && wh == nullptr;
  const int64_t work = max_i(1, (id_w ? 0 : Hi * Wo * Tw) + Ho * Wo * Th);
  parallel_for_work(P, work, [&](int64_t b, int64_t e) {
    std::vector<float> tmp(id_w || direct ? 0 : static_cast<size_t>(Hi * Wo));
    for (int64_t p = b; p < e; ++p) {
      const float* xp = x + p * Hi * Wi;
      float* yp = y + p * Ho * Wo;
      if (direct) {
        for (int64_t i = 0; i < Ho; ++i) {
          float* o = yp + i * Wo;
          if (ih[i] < 0) {
            for (int64_t j = 0; j < Wo; ++j) o[j] = fill;
          } else {
            width_row(xp + ih[i] * Wi, iw, ww, Tw, Wo, fill, runs_w, o);
          }
        }
        continue;
      }
      const float* t = xp;  // rows of Wo width sums
      if (!id_w) {
        for (int64_t r = 0; r < Hi; ++r)
          if (needed[static_cast<size_t>(r)]) width_row(xp + r * Wi, iw, ww, Tw, Wo, fill, runs_w, tmp.data() + r * Wo);
        t = tmp.data();
      }
      for (int64_t i = 0; i < Ho; ++i) {
        float* o = yp + i * Wo;
        const int64_t s0 = ih[i];
        if (wh == nullptr && Th == 1) {
          if (s0 < 0) {
            for (int64_t j = 0; j < Wo; ++j) o[j] = fill;
          } else {
            std::memcpy(o, t + s0 * Wo, static_cast<size_t>(Wo) * sizeof(float));
          }
          continue;
        }
        const float* a = t + s0 * Wo;
        if (wh == nullptr) {
          for (int64_t j = 0; j < Wo; ++j) o[j] = a[j];
        } else {
          const float w0 = wh[i];
          for (int64_t j = 0; j < Wo; ++j) o[j] = a[j] * w0;
        }
        for (int64_t k = 1; k < Th; ++k) {
          const float* c = t + ih[k * Ho + i] * Wo;
          if (wh == nullptr) {
            for (int64_t j = 0; j < Wo; ++j) o[j] = o[j] + c[j];
          } else {
            const float wk = wh[k * Ho + i];
            for (int64_t j = 0; j < Wo; ++j) o[j] = o[j] + c[j] * wk;
          }
        }
      }
    }
  });
}

void resample2d_backward(const float* g, int64_t P, int64_t Ho, int64_t Wo, const int64_t* ih, const float* wh,
                         int64_t Th, int64_t Hi, const int64_t* iw, const float* ww, int64_t Tw, int64_t Wi,
                         float* gx) {
  const bool id_h = is_identity(ih, wh, Th, Hi, Ho);
  const bool id_w = is_identity(iw, ww, Tw, Wi, Wo);
  const std::vector<Run> runs_w = runs_of(iw, ww, Tw, Wo);
  const int64_t work = max_i(1, (id_h ? 0 : Ho * Wo * Th) + (id_w ? Hi * Wi : Hi * Wo * Tw));
  parallel_for_work(P, work, [&](int64_t b, int64_t e) {
    std::vector<float> tmp(id_h ? 0 : static_cast<size_t>(Hi * Wo));
    for (int64_t p = b; p < e; ++p) {
      const float* gp = g + p * Ho * Wo;
      const float* t = gp;  // (Hi, Wo): the height adjoint
      if (!id_h) {
        float* tm = tmp.data();
        std::memset(tm, 0, tmp.size() * sizeof(float));
        for (int64_t i = 0; i < Ho; ++i) {
          const float* gi = gp + i * Wo;
          for (int64_t k = 0; k < Th; ++k) {
            float* d = tm + ih[k * Ho + i] * Wo;
            if (wh == nullptr) {
              for (int64_t j = 0; j < Wo; ++j) d[j] = d[j] + gi[j];
            } else {
              const float w = wh[k * Ho + i];
              for (int64_t j = 0; j < Wo; ++j) d[j] = d[j] + gi[j] * w;
            }
          }
        }
        t = tm;
      }
      float* op = gx + p * Hi * Wi;
      if (id_w) {
        std::memcpy(op, t, static_cast<size_t>(Hi * Wi) * sizeof(float));
        continue;
      }
      for (int64_t r = 0; r < Hi; ++r) {
        const float* tr = t + r * Wo;
        float* o = op + r * Wi;
        for (int64_t q = 0; q < Wi; ++q) o[q] = 0.0f;
        if (!runs_w.empty()) {  // no -1 here: every run is a source run
          for (const Run& rn : runs_w) {
            float* d = o + rn.src;
            const float* sr = tr + rn.j;
            for (int64_t q = 0; q < rn.len; ++q) d[q] = d[q] + sr[q];
          }
        } else if (ww == nullptr && Tw == 1) {
          for (int64_t j = 0; j < Wo; ++j) o[iw[j]] = o[iw[j]] + tr[j];
        } else if (ww == nullptr) {
          for (int64_t j = 0; j < Wo; ++j)
            for (int64_t k = 0; k < Tw; ++k) o[iw[k * Wo + j]] = o[iw[k * Wo + j]] + tr[j];
        } else {
          for (int64_t j = 0; j < Wo; ++j)
            for (int64_t k = 0; k < Tw; ++k) o[iw[k * Wo + j]] = o[iw[k * Wo + j]] + tr[j] * ww[k * Wo + j];
        }
      }
    }
  });
}

}  // namespace FG_ISA_NS
}  // namespace fg
