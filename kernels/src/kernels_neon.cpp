// aarch64 NEON kernels: fp32 FMA, fp16 widened with fcvtl, int8 widened to int16 and
// accumulated pairwise (smull/sadalp) or, where the CPU has the dot-product extension
// (HWCAP_ASIMDDP, checked at run time in cpu.cpp), with sdot: the "neon_dot" table.
//
// Tiling follows the x86 files: 4 rows at a time against one query, 2 accumulators per row,
// so 8 independent FMA chains hide the FMA latency, and each query vector is read once per
// 4 rows. int8 sums are exact, so every table gives the scalar reference's int8 scores bit for
// bit; float sums differ from it only in rounding order (kernel_tests bounds both).
#if defined(__aarch64__)
#include <arm_neon.h>

#include "skulens/simd.h"

namespace skulens {
namespace {

struct F32 {
  using T = float;
  static float32x4_t load(const float* p) { return vld1q_f32(p); }
};

struct F16 {
  using T = uint16_t;
  static float32x4_t load(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
};

// Rows of type S::T against float queries; dpad is a multiple of 16 elements.
template <class S>
void score_float(const float* q, size_t nq, const typename S::T* rows, const uint32_t* ids,
                 size_t nrows, size_t dpad, float* out, size_t ldo) {
  using T = typename S::T;
  size_t i = 0;
  for (; i + 4 <= nrows; i += 4) {
    const T* r[4];
    for (int k = 0; k < 4; ++k) r[k] = rows + (ids ? ids[i + k] : i + k) * dpad;
    for (size_t qi = 0; qi < nq; ++qi) {
      const float* y = q + qi * dpad;
      float32x4_t a[4][2];
      for (auto& row : a) row[0] = row[1] = vdupq_n_f32(0.0f);
      for (size_t j = 0; j < dpad; j += 8) {
        const float32x4_t y0 = vld1q_f32(y + j), y1 = vld1q_f32(y + j + 4);
        for (int k = 0; k < 4; ++k) {
          a[k][0] = vfmaq_f32(a[k][0], S::load(r[k] + j), y0);
          a[k][1] = vfmaq_f32(a[k][1], S::load(r[k] + j + 4), y1);
        }
      }
      for (int k = 0; k < 4; ++k) out[qi * ldo + i + k] = vaddvq_f32(vaddq_f32(a[k][0], a[k][1]));
    }
  }
  for (; i < nrows; ++i) {
    const T* x = rows + (ids ? ids[i] : i) * dpad;
    for (size_t qi = 0; qi < nq; ++qi) {
      const float* y = q + qi * dpad;
      float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0;
      for (size_t j = 0; j < dpad; j += 8) {
        a0 = vfmaq_f32(a0, S::load(x + j), vld1q_f32(y + j));
        a1 = vfmaq_f32(a1, S::load(x + j + 4), vld1q_f32(y + j + 4));
      }
      out[qi * ldo + i] = vaddvq_f32(vaddq_f32(a0, a1));
    }
  }
}

void score_f32(const float* q, size_t nq, const float* rows, const uint32_t* ids, size_t nrows,
               size_t dpad, float* out, size_t ldo) {
  score_float<F32>(q, nq, rows, ids, nrows, dpad, out, ldo);
}

void score_f16(const float* q, size_t nq, const uint16_t* rows, const uint32_t* ids,
               size_t nrows, size_t dpad, float* out, size_t ldo) {
  score_float<F16>(q, nq, rows, ids, nrows, dpad, out, ldo);
}

// <x, y> over n int8 (n a multiple of 16): widening multiplies, pairwise accumulation in int32.
inline int32_t dot_i8_widen(const int8_t* x, const int8_t* y, size_t n) {
  int32x4_t acc0 = vdupq_n_s32(0), acc1 = acc0;
  for (size_t j = 0; j < n; j += 16) {
    const int8x16_t a = vld1q_s8(x + j), b = vld1q_s8(y + j);
    acc0 = vpadalq_s16(acc0, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    acc1 = vpadalq_s16(acc1, vmull_high_s8(a, b));
  }
  return vaddvq_s32(vaddq_s32(acc0, acc1));
}

__attribute__((target("arch=armv8.2-a+dotprod"))) inline int32_t dot_i8_sdot(const int8_t* x, const int8_t* y, size_t n) {
  int32x4_t acc0 = vdupq_n_s32(0), acc1 = acc0;
  size_t j = 0;
  for (; j + 32 <= n; j += 32) {
    acc0 = vdotq_s32(acc0, vld1q_s8(x + j), vld1q_s8(y + j));
    acc1 = vdotq_s32(acc1, vld1q_s8(x + j + 16), vld1q_s8(y + j + 16));
  }
  for (; j < n; j += 16) acc0 = vdotq_s32(acc0, vld1q_s8(x + j), vld1q_s8(y + j));
  return vaddvq_s32(vaddq_s32(acc0, acc1));
}

template <int32_t (*Dot)(const int8_t*, const int8_t*, size_t)>
void score_i8(const int8_t* q, const float* qscale, size_t nq, const int8_t* rows,
              const float* rscale, const int32_t* /*rsum*/, const uint32_t* ids, size_t nrows,
              size_t dpad, float* out, size_t ldo) {
  for (size_t i = 0; i < nrows; ++i) {
    const size_t r = ids ? ids[i] : i;
    const int8_t* x = rows + r * dpad;
    for (size_t qi = 0; qi < nq; ++qi)
      out[qi * ldo + i] = (qscale[qi] * rscale[r]) * static_cast<float>(Dot(x, q + qi * dpad, dpad));
  }
}

__attribute__((target("arch=armv8.2-a+dotprod"))) void score_i8_sdot(const int8_t* q, const float* qscale, size_t nq,
                                                       const int8_t* rows, const float* rscale,
                                                       const int32_t* rsum, const uint32_t* ids, size_t nrows,
                                                       size_t dpad, float* out, size_t ldo) {
  score_i8<dot_i8_sdot>(q, qscale, nq, rows, rscale, rsum, ids, nrows, dpad, out, ldo);
}

size_t select_gt(const float* s, size_t n, float thr, uint32_t* idx) {
  size_t cnt = 0, i = 0;
  const float32x4_t t = vdupq_n_f32(thr);
  // Skip groups of 4 with nothing above the threshold (the common case once top-k has filled).
  for (; i + 4 <= n; i += 4) {
    if (vmaxvq_u32(vcgtq_f32(vld1q_f32(s + i), t)) == 0) continue;
    for (size_t l = i; l < i + 4; ++l)
      if (s[l] > thr) idx[cnt++] = static_cast<uint32_t>(l);
  }
  for (; i < n; ++i)
    if (s[i] > thr) idx[cnt++] = static_cast<uint32_t>(i);
  return cnt;
}

uint64_t stream_read(const void* p, size_t bytes) {
  const uint8_t* c = static_cast<const uint8_t*>(p);
  uint64x2_t a0 = vdupq_n_u64(0), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 64 <= bytes; i += 64) {
    a0 = veorq_u64(a0, vld1q_u64(reinterpret_cast<const uint64_t*>(c + i)));
    a1 = veorq_u64(a1, vld1q_u64(reinterpret_cast<const uint64_t*>(c + i + 16)));
    a2 = veorq_u64(a2, vld1q_u64(reinterpret_cast<const uint64_t*>(c + i + 32)));
    a3 = veorq_u64(a3, vld1q_u64(reinterpret_cast<const uint64_t*>(c + i + 48)));
  }
  const uint64x2_t a = veorq_u64(veorq_u64(a0, a1), veorq_u64(a2, a3));
  uint64_t h = vgetq_lane_u64(a, 0) ^ vgetq_lane_u64(a, 1);
  for (; i < bytes; ++i) h ^= c[i];
  return h;
}

float dot_f32(const float* a, const float* b, size_t n) {
  float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    a0 = vfmaq_f32(a0, vld1q_f32(a + i), vld1q_f32(b + i));
    a1 = vfmaq_f32(a1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
  }
  float s = vaddvq_f32(vaddq_f32(a0, a1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

const Kernels kNeonKernels = {"neon", score_f32, score_f16, score_i8<dot_i8_widen>, select_gt, stream_read,
                              dot_f32};
const Kernels kNeonDotKernels = {"neon_dot", score_f32, score_f16, score_i8_sdot, select_gt, stream_read,
                                 dot_f32};

}  // namespace skulens
#endif  // __aarch64__
