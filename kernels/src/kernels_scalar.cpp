// Portable kernels: the fallback on CPUs without AVX2 and the path on aarch64
// (the compiler may vectorise the fixed-width lane loops for NEON).
#include <cstring>

#include "skulens/fp16.h"
#include "skulens/simd.h"

namespace skulens {
namespace {

constexpr int kLanes = 16;

// Sum of 16 partial sums by the same pairwise tree for every row.
inline float fold(float* a) {
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) a[l] += a[l + w];
  return a[0];
}

template <class T, class Dec>
void score_float(const float* q, size_t nq, const T* rows, const uint32_t* ids, size_t nrows,
                 size_t dpad, float* out, size_t ldo, Dec dec) {
  for (size_t i = 0; i < nrows; ++i) {
    const T* x = rows + (ids ? ids[i] : i) * dpad;
    for (size_t qi = 0; qi < nq; ++qi) {
      const float* y = q + qi * dpad;
      float acc[kLanes] = {};
      for (size_t j = 0; j < dpad; j += kLanes)
        for (int l = 0; l < kLanes; ++l) acc[l] += dec(x[j + l]) * y[j + l];
      out[qi * ldo + i] = fold(acc);
    }
  }
}

void score_f32(const float* q, size_t nq, const float* rows, const uint32_t* ids, size_t nrows,
               size_t dpad, float* out, size_t ldo) {
  score_float(q, nq, rows, ids, nrows, dpad, out, ldo, [](float v) { return v; });
}

void score_f16(const float* q, size_t nq, const uint16_t* rows, const uint32_t* ids,
               size_t nrows, size_t dpad, float* out, size_t ldo) {
  score_float(q, nq, rows, ids, nrows, dpad, out, ldo, [](uint16_t v) { return f16_to_f32(v); });
}

void score_i8(const int8_t* q, const float* qscale, size_t nq, const int8_t* rows,
              const float* rscale, const int32_t* /*rsum*/, const uint32_t* ids, size_t nrows,
              size_t dpad, float* out, size_t ldo) {
  for (size_t i = 0; i < nrows; ++i) {
    const size_t r = ids ? ids[i] : i;
    const int8_t* x = rows + r * dpad;
    for (size_t qi = 0; qi < nq; ++qi) {
      const int8_t* y = q + qi * dpad;
      int32_t dot = 0;
      for (size_t j = 0; j < dpad; ++j) dot += static_cast<int32_t>(x[j]) * y[j];
      out[qi * ldo + i] = (qscale[qi] * rscale[r]) * static_cast<float>(dot);
    }
  }
}

size_t select_gt(const float* s, size_t n, float thr, uint32_t* idx) {
  size_t cnt = 0;
  for (size_t i = 0; i < n; ++i)
    if (s[i] > thr) idx[cnt++] = static_cast<uint32_t>(i);
  return cnt;
}

uint64_t stream_read(const void* p, size_t bytes) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  uint64_t acc[8] = {};
  size_t i = 0;
  for (; i + 64 <= bytes; i += 64) {
    uint64_t w[8];
    std::memcpy(w, c + i, 64);
    for (int l = 0; l < 8; ++l) acc[l] ^= w[l];
  }
  uint64_t h = 0;
  for (int l = 0; l < 8; ++l) h ^= acc[l];
  for (; i < bytes; ++i) h ^= c[i];
  return h;
}

float dot_f32(const float* a, const float* b, size_t n) {
  float acc[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  for (; i < n; ++i) acc[0] += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

}  // namespace

const Kernels kScalarKernels = {"scalar", score_f32, score_f16, score_i8, select_gt, stream_read, dot_f32};

}  // namespace skulens
