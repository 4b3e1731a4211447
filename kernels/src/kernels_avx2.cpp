// AVX2 + FMA + F16C kernels: the tiling of the AVX-512 file with 8-wide registers (Q*R = 12
// or 8 accumulators). int8 multiplies by maddubs with the sign trick,
// which needs no u8 offset, so the row sums are not used here.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "skulens/dpad.h"
#include "skulens/simd.h"

namespace skulens {
namespace {

constexpr size_t kL1Slice = 16 * 1024;  // bytes of rows kept in L1 across a batch
constexpr size_t kPrefetchAhead = 16 * 1024;  // a single query's rows, fetched this far ahead

// lane l = horizontal sum of v[l]; the same tree for every lane.
inline __m256 reduce8(const __m256* v) {
  const __m256 a0 = _mm256_hadd_ps(v[0], v[1]), a1 = _mm256_hadd_ps(v[2], v[3]);
  const __m256 a2 = _mm256_hadd_ps(v[4], v[5]), a3 = _mm256_hadd_ps(v[6], v[7]);
  const __m256 b0 = _mm256_hadd_ps(a0, a1), b1 = _mm256_hadd_ps(a2, a3);
  return _mm256_add_ps(_mm256_permute2f128_ps(b0, b1, 0x20), _mm256_permute2f128_ps(b0, b1, 0x31));
}

inline __m256i reduce8(const __m256i* v) {
  const __m256i a0 = _mm256_hadd_epi32(v[0], v[1]), a1 = _mm256_hadd_epi32(v[2], v[3]);
  const __m256i a2 = _mm256_hadd_epi32(v[4], v[5]), a3 = _mm256_hadd_epi32(v[6], v[7]);
  const __m256i b0 = _mm256_hadd_epi32(a0, a1), b1 = _mm256_hadd_epi32(a2, a3);
  return _mm256_add_epi32(_mm256_permute2x128_si256(b0, b1, 0x20),
                          _mm256_permute2x128_si256(b0, b1, 0x31));
}

struct F32 {
  using T = float;
  using Q = float;
  using Acc = __m256;
  static constexpr bool kFloat = true;
  // fp32 reads a line per two FMAs: the hardware prefetcher keeps up alone, and software
  // prefetches on top cost it 5-10% on an AVX2-only EPYC (fp16 and int8 gain from them).
  static constexpr bool kPrefetch = false;
  static constexpr size_t kStep = 8;
  static Acc zero() { return _mm256_setzero_ps(); }
  static __m256 row(const T* p) { return _mm256_load_ps(p); }
  static __m256 qry(const Q* p) { return _mm256_load_ps(p); }
  static Acc mac(Acc a, __m256 x, __m256 q) { return _mm256_fmadd_ps(x, q, a); }
};

struct F16 {
  using T = uint16_t;
  using Q = float;
  using Acc = __m256;
  static constexpr bool kFloat = true;
  static constexpr bool kPrefetch = true;
  static constexpr size_t kStep = 8;
  static Acc zero() { return _mm256_setzero_ps(); }
  static __m256 row(const T* p) {
    return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static __m256 qry(const Q* p) { return _mm256_load_ps(p); }
  static Acc mac(Acc a, __m256 x, __m256 q) { return _mm256_fmadd_ps(x, q, a); }
};

// int8 by vpmaddubsw with the sign trick: |x| (unsigned) times q carrying x's sign gives x*q in
// each byte pair without a widening step, 32 products per instruction; vpmaddwd by ones sums the
// pairs to int32. No saturation: codes are clamped to +-127, so a pair is at most 2 * 127 * 127 =
// 32258 < 32767, and the int32 dot is exact, bit-identical to the scalar table and to any
// grouping. |x| is the same for every query of a tile (the compiler keeps it across the q loop).
struct I8 {
  using T = int8_t;
  using Q = int8_t;
  using Acc = __m256i;
  static constexpr bool kFloat = false;
  static constexpr bool kPrefetch = true;
  static constexpr size_t kStep = 32;
  static Acc zero() { return _mm256_setzero_si256(); }
  static __m256i row(const T* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }
  static __m256i qry(const Q* p) { return row(p); }
  static Acc mac(Acc a, __m256i x, __m256i q) {
#if SKULENS_AVX2_VNNI
    return _mm256_dpbusd_avx_epi32(a, _mm256_abs_epi8(x), _mm256_sign_epi8(q, x));
#else
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(x), _mm256_sign_epi8(q, x));
    return _mm256_add_epi32(a, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#endif
  }
};

template <class S, int NQ, int NR>
inline void tile(const typename S::Q* const* qp, const typename S::T* const* rp, size_t dpad,
                 typename S::Acc* acc) {
  constexpr int kAcc = NQ * NR;
  static_assert(kAcc % 4 == 0 && kAcc <= 12, "tile of 4, 8 or 12 accumulators");
  for (int i = 0; i < kAcc; ++i) acc[i] = S::zero();
  if constexpr (NQ == 1) {
    // One query is memory-bound: the 8 rows' chains advance together on one loaded query chunk.
    for (size_t j = 0; j < dpad; j += S::kStep) {
      const auto qv = S::qry(qp[0] + j);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) acc[r] = S::mac(acc[r], S::row(rp[r] + j), qv);
    }
    return;
  }
  for (size_t j = 0; j < dpad; j += S::kStep) {
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const auto x = S::row(rp[r] + j);
#pragma GCC unroll 4
      for (int q = 0; q < NQ; ++q) acc[q * NR + r] = S::mac(acc[q * NR + r], x, S::qry(qp[q] + j));
    }
  }
}

template <class S, int NQ, int NR>
void score_group(const typename S::Q* q, size_t q0, const typename S::T* rows,
                 const uint32_t* ids, size_t nrows, size_t dpad, float* out, size_t ldo) {
  const typename S::Q* qp[NQ];
  for (int i = 0; i < NQ; ++i) qp[i] = q + (q0 + i) * dpad;
  constexpr int kAcc = NQ * NR, kRes = (kAcc + 7) / 8 * 8;
  typename S::Acc acc[kRes];
  alignas(32) float res[kRes];
  for (size_t i = 0; i < nrows; i += NR) {
    const typename S::T* rp[NR];
    for (int r = 0; r < NR; ++r) {
      const size_t ii = std::min(i + r, nrows - 1);
      rp[r] = rows + (ids ? ids[ii] : ii) * dpad;
    }
    if (NQ == 1 && !ids) {  // see score_stream
      const char* pf = reinterpret_cast<const char*>(rows + i * dpad) + kPrefetchAhead;
      for (size_t b = 0; b < NR * dpad * sizeof(typename S::T); b += 64) _mm_prefetch(pf + b, _MM_HINT_T0);
    }
    tile<S, NQ, NR>(qp, rp, dpad, acc);
    for (int a = kAcc; a < kRes; ++a) acc[a] = S::zero();
    for (int a = 0; a < kRes; a += 8) {
      if constexpr (S::kFloat) {
        _mm256_store_ps(res + a, reduce8(acc + a));
      } else {
        _mm256_store_si256(reinterpret_cast<__m256i*>(res + a), reduce8(acc + a));
      }
    }
    if (i + NR <= nrows) {  // fixed-size copies compile to plain vector stores
      for (int qq = 0; qq < NQ; ++qq) std::memcpy(out + (q0 + qq) * ldo + i, res + qq * NR, NR * 4);
    } else {
      for (int qq = 0; qq < NQ; ++qq)
        for (size_t r = 0; i + r < nrows; ++r) out[(q0 + qq) * ldo + i + r] = res[qq * NR + r];
    }
  }
}

// One query over contiguous rows with the row length known at compile time (as in the AVX-512
// file): every load is a base register plus an immediate, and fp16 and int8 rows are prefetched
// kPrefetchAhead bytes ahead, more lines in flight than the hardware prefetcher keeps. Same FMA
// chains and reduce8 as tile<S, 1, 8>: bit-identical scores. Measured (bench/RESULTS.md):
// prefetching a tile's lines in one burst cost fp16 and int8 up to half their speed.
template <class S, size_t DPAD>
void score_stream(const typename S::Q* q, const typename S::T* rows, size_t nrows, float* out) {
  typename S::Acc acc[8];
  size_t i = 0;
  for (; i + 8 <= nrows; i += 8) {
    const typename S::T* p = rows + i * DPAD;
    const char* pf = reinterpret_cast<const char*>(p) + kPrefetchAhead;
    // The 8 rows one after another, each prefetched a line at a time as it is consumed: one
    // ascending stream. Advancing the 8 rows' chains together (as the AVX-512 file does) read
    // memory at half the floor on an AMD EPYC (Zen 3) with only AVX2, whose prefetchers lose
    // track of 8 interleaved strides (bench/RESULTS.md); the FMA chains are the same.
    constexpr size_t kPerLine = 64 / (S::kStep * sizeof(typename S::T));  // chunks per line
    // The row loop is not unrolled: unrolled, GCC hoists every query chunk into registers across
    // the 8 rows and spills; int8 ran 20% slower so (fp32 and fp16 measured alike either way).
#pragma GCC unroll 1
    for (int r = 0; r < 8; ++r) {
      auto a = S::zero();
#pragma GCC unroll 16
      for (size_t j = 0; j < DPAD; j += S::kStep) {
        if (S::kPrefetch && j % (S::kStep * kPerLine) == 0)
          _mm_prefetch(pf + (r * DPAD + j) * sizeof(typename S::T), _MM_HINT_T0);
        a = S::mac(a, S::row(p + r * DPAD + j), S::qry(q + j));
      }
      acc[r] = a;
    }
    if constexpr (S::kFloat) {
      _mm256_storeu_ps(out + i, reduce8(acc));
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), reduce8(acc));
    }
  }
  if (i < nrows) score_group<S, 1, 8>(q, 0, rows + i * DPAD, nullptr, nrows - i, DPAD, out + i, 0);
}

template <class S>
bool try_stream(const typename S::Q* q, const typename S::T* rows, size_t nrows, size_t dpad, float* out) {
  if (with_dpad(dpad, [&](auto d) { score_stream<S, decltype(d)::value>(q, rows, nrows, out); })) return true;
  // Two more common embedding sizes on this table only: the generic tile read them at 52-59% of
  // the floor in fp16 and int8 on an AVX2-only EPYC (bench/RESULTS.md).
  switch (dpad) {
    case 768: score_stream<S, 768>(q, rows, nrows, out); return true;
    case 1024: score_stream<S, 1024>(q, rows, nrows, out); return true;
    default: return false;
  }
}

template <class S>
void score_all(const typename S::Q* q, size_t nq, const typename S::T* rows, const uint32_t* ids,
               size_t nrows, size_t dpad, float* out, size_t ldo) {
  if (nq == 1 && !ids && try_stream<S>(q, rows, nrows, dpad, out)) return;
  // Rows in L1-sized slices; every query group sweeps a slice while it is hot,
  // so each row chunk is fetched from memory once for the whole batch.
  const size_t slice = std::max<size_t>(16, kL1Slice / (dpad * sizeof(typename S::T)) / 16 * 16);
  for (size_t r0 = 0; r0 < nrows; r0 += slice) {
    const size_t nr = std::min(slice, nrows - r0);
    const typename S::T* base = ids ? rows : rows + r0 * dpad;
    const uint32_t* sid = ids ? ids + r0 : nullptr;
    float* o = out + r0;
    // The next slice is prefetched a share at a time after each query group: its DRAM reads
    // overlap this slice's arithmetic instead of stalling the next slice's first group.
    const char* pf = ids ? nullptr : reinterpret_cast<const char*>(base + nr * dpad);
    const size_t pf_bytes = ids ? 0 : std::min(slice, nrows - std::min(nrows, r0 + nr)) * dpad * sizeof(typename S::T);
    const size_t groups = (nq + 2) / 3;
    const size_t share = (pf_bytes / groups + 63) / 64 * 64;
    size_t pf_done = 0;
    auto prefetch_share = [&] {
      for (const size_t end = std::min(pf_bytes, pf_done + share); pf_done < end; pf_done += 64)
        _mm_prefetch(pf + pf_done, _MM_HINT_T0);
    };
    size_t q0 = 0;
    // 3 queries x 4 rows: 12 accumulators hide the FMA latency (2 pipes x 4 cycles on Zen 3) with
    // 7 loads per 12 FMAs; 30% faster in fp32 than 4 x 2 on an AVX2-only EPYC (bench/RESULTS.md).
    for (; q0 + 3 <= nq; q0 += 3) score_group<S, 3, 4>(q, q0, base, sid, nr, dpad, o, ldo), prefetch_share();
    for (; q0 + 2 <= nq; q0 += 2) score_group<S, 2, 4>(q, q0, base, sid, nr, dpad, o, ldo), prefetch_share();
    for (; q0 < nq; ++q0) score_group<S, 1, 8>(q, q0, base, sid, nr, dpad, o, ldo), prefetch_share();
  }
}

void score_f32(const float* q, size_t nq, const float* rows, const uint32_t* ids, size_t nrows,
               size_t dpad, float* out, size_t ldo) {
  score_all<F32>(q, nq, rows, ids, nrows, dpad, out, ldo);
}

void score_f16(const float* q, size_t nq, const uint16_t* rows, const uint32_t* ids,
               size_t nrows, size_t dpad, float* out, size_t ldo) {
  score_all<F16>(q, nq, rows, ids, nrows, dpad, out, ldo);
}

void score_i8(const int8_t* q, const float* qscale, size_t nq, const int8_t* rows,
              const float* rscale, const int32_t* /*rsum*/, const uint32_t* ids, size_t nrows,
              size_t dpad, float* out, size_t ldo) {
  score_all<I8>(q, nq, rows, ids, nrows, dpad, out, ldo);
  for (size_t qi = 0; qi < nq; ++qi) {
    float* o = out + qi * ldo;
    for (size_t i = 0; i < nrows; ++i) {
      int32_t dot;
      std::memcpy(&dot, o + i, 4);
      o[i] = (qscale[qi] * rscale[ids ? ids[i] : i]) * static_cast<float>(dot);
    }
  }
}

size_t select_gt(const float* s, size_t n, float thr, uint32_t* idx) {
  const __m256 t = _mm256_set1_ps(thr);
  size_t cnt = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    unsigned m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + i), t, _CMP_GT_OQ)));
    while (m) {
      idx[cnt++] = static_cast<uint32_t>(i + __builtin_ctz(m));
      m &= m - 1;
    }
  }
  for (; i < n; ++i)
    if (s[i] > thr) idx[cnt++] = static_cast<uint32_t>(i);
  return cnt;
}

uint64_t stream_read(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 128 <= bytes; i += 128) {
    a0 = _mm256_xor_si256(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i)));
    a1 = _mm256_xor_si256(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i + 32)));
    a2 = _mm256_xor_si256(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i + 64)));
    a3 = _mm256_xor_si256(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i + 96)));
  }
  a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
  alignas(32) uint64_t w[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(w), a0);
  uint64_t h = w[0] ^ w[1] ^ w[2] ^ w[3];
  for (; i < bytes; ++i) h ^= static_cast<unsigned char>(c[i]);
  return h;
}

float dot_f32(const float* a, const float* b, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  s0 = _mm256_add_ps(s0, s1);
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
  const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
  float r = _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}

}  // namespace

#if SKULENS_AVX2_VNNI
const Kernels kAvx2VnniKernels = {"avx2_vnni", score_f32, score_f16, score_i8, select_gt, stream_read, dot_f32};
#else
const Kernels kAvx2Kernels = {"avx2", score_f32, score_f16, score_i8, select_gt, stream_read, dot_f32};
#endif

}  // namespace skulens
