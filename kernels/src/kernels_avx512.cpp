// AVX-512 (F/BW/VL/DQ + VNNI) kernels, plus the AMX int8 batch path. Compiled
// with those target flags only; reached only after cpu.cpp has checked the CPU
// (and, for AMX, the OS) supports them.
//
// Micro-kernel: a tile of Q queries x R rows (Q*R = 16) keeps 16 accumulators
// in registers; each loaded row chunk feeds Q FMAs, so a batch reads every row
// block once for all its queries (fused batch). The 16 accumulators are then
// folded by one transpose-reduce into a single vector of 16 dot products.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "skulens/dpad.h"
#include "skulens/simd.h"

namespace skulens {
namespace {

constexpr size_t kL1Slice = 16 * 1024;  // bytes of rows kept in L1 across a batch
constexpr size_t kPrefetchAhead = 16 * 1024;  // measured: 8-64 KiB alike, L1 (T0) hint no worse

// n elements of 4-byte T in a per-thread vector, from a 64-byte boundary.
template <class T>
T* scratch64(std::vector<T>& v, size_t n) {
  static_assert(sizeof(T) == 4, "4-byte elements");
  v.resize(n + 16);
  return v.data() + (16 - reinterpret_cast<uintptr_t>(v.data()) / 4 % 16) % 16;
}

// lane l of the result = horizontal sum of v[l]. Every lane uses the same
// addition tree, so a row's score does not depend on its slot in the tile.
inline __m512 reduce16(const __m512* v) {
  __m512 a[8], b[4];
  for (int k = 0; k < 8; ++k)
    a[k] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]),
                         _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]));
  for (int m = 0; m < 4; ++m) {
    const __m512d x = _mm512_castps_pd(a[2 * m]), y = _mm512_castps_pd(a[2 * m + 1]);
    b[m] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], 0x88),
                                   _mm512_shuffle_f32x4(b[0], b[1], 0xDD));
  const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], 0x88),
                                   _mm512_shuffle_f32x4(b[2], b[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88),
                       _mm512_shuffle_f32x4(s01, s23, 0xDD));
}

inline __m512i reduce16(const __m512i* v) {
  __m512i a[8], b[4];
  for (int k = 0; k < 8; ++k)
    a[k] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * k], v[2 * k + 1]),
                            _mm512_unpackhi_epi32(v[2 * k], v[2 * k + 1]));
  for (int m = 0; m < 4; ++m)
    b[m] = _mm512_add_epi32(_mm512_unpacklo_epi64(a[2 * m], a[2 * m + 1]),
                            _mm512_unpackhi_epi64(a[2 * m], a[2 * m + 1]));
  const __m512i s01 = _mm512_add_epi32(_mm512_shuffle_i32x4(b[0], b[1], 0x88),
                                       _mm512_shuffle_i32x4(b[0], b[1], 0xDD));
  const __m512i s23 = _mm512_add_epi32(_mm512_shuffle_i32x4(b[2], b[3], 0x88),
                                       _mm512_shuffle_i32x4(b[2], b[3], 0xDD));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(s01, s23, 0x88),
                          _mm512_shuffle_i32x4(s01, s23, 0xDD));
}

// Storage-specific inner step: acc[q*R+r] += q_chunk . row_chunk
struct F32 {
  using T = float;
  using Q = float;
  using Acc = __m512;
  static constexpr bool kFloat = true;
  static constexpr size_t kStep = 16;  // elements per 64-byte chunk
  static Acc zero() { return _mm512_setzero_ps(); }
  static __m512 row(const T* p) { return _mm512_load_ps(p); }
  static __m512 qry(const Q* p) { return _mm512_load_ps(p); }
  static Acc mac(Acc a, __m512 x, __m512 q) { return _mm512_fmadd_ps(x, q, a); }
};

struct F16 {
  using T = uint16_t;
  using Q = float;
  using Acc = __m512;
  static constexpr bool kFloat = true;
  static constexpr size_t kStep = 16;  // 32 bytes of halves -> 16 floats
  static Acc zero() { return _mm512_setzero_ps(); }
  static __m512 row(const T* p) {
    return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static __m512 qry(const Q* p) { return _mm512_load_ps(p); }
  static Acc mac(Acc a, __m512 x, __m512 q) { return _mm512_fmadd_ps(x, q, a); }
};

// VNNI multiplies u8 x s8: the query is shifted by +128 (xor of the sign bit,
// once per call in score_i8) and the epilogue subtracts 128 * sum(row codes).
struct I8 {
  using T = int8_t;
  using Q = uint8_t;
  using Acc = __m512i;
  static constexpr bool kFloat = false;
  static constexpr size_t kStep = 64;
  static Acc zero() { return _mm512_setzero_si512(); }
  static __m512i row(const T* p) { return _mm512_load_si512(p); }
  static __m512i qry(const Q* p) { return _mm512_loadu_si512(p); }
  static Acc mac(Acc a, __m512i x, __m512i q) { return _mm512_dpbusd_epi32(a, q, x); }
};

template <class S, int NQ, int NR>
inline void tile(const typename S::Q* const* qp, const typename S::T* const* rp, size_t dpad,
                 typename S::Acc* acc) {
  static_assert(NQ * NR == 16, "tile must hold 16 accumulators");
  for (int i = 0; i < 16; ++i) acc[i] = S::zero();
  if constexpr (NQ == 1) {
    // One query is memory-bound: the 16 rows' chains advance together, each
    // query chunk loaded once and 16 independent FMAs in flight per step.
    for (size_t j = 0; j < dpad; j += S::kStep) {
      const auto qv = S::qry(qp[0] + j);
#pragma GCC unroll 16
      for (int r = 0; r < NR; ++r) acc[r] = S::mac(acc[r], S::row(rp[r] + j), qv);
    }
    return;
  }
  for (size_t j = 0; j < dpad; j += S::kStep) {
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      const auto x = S::row(rp[r] + j);
#pragma GCC unroll 4
      for (int q = 0; q < NQ; ++q) acc[q * NR + r] = S::mac(acc[q * NR + r], x, S::qry(qp[q] + j));
    }
  }
}

// Scores rows [0, nrows) for queries [q0, q0+NQ); raw results (float dots or
// int32 code dots stored bit-for-bit) go to out.
// pf_next: rows of the next slice, pulled into L2 a tile's worth at a time so the
// next slice's first pass does not wait on L3 or DRAM (nullptr: none).
template <class S, int NQ, int NR>
void score_group(const typename S::Q* q, size_t q0, const typename S::T* rows,
                 const uint32_t* ids, size_t nrows, size_t dpad, float* out, size_t ldo,
                 const typename S::T* pf_next = nullptr) {
  const typename S::Q* qp[NQ];
  for (int i = 0; i < NQ; ++i) qp[i] = q + (q0 + i) * dpad;
  typename S::Acc acc[16];
  alignas(64) float res[16];
  for (size_t i = 0; i < nrows; i += NR) {
    const typename S::T* rp[NR];
    for (int r = 0; r < NR; ++r) {
      const size_t ii = std::min(i + r, nrows - 1);  // tail rows repeat the last one
      rp[r] = rows + (ids ? ids[ii] : ii) * dpad;
    }
    if (NQ == 1 && !ids) {
      // A single query streams the rows once: fetch kPrefetchAhead bytes ahead,
      // which keeps more lines in flight than the hardware prefetcher does here.
      const char* pf = reinterpret_cast<const char*>(rows + i * dpad) + kPrefetchAhead;
      // (A prefetch past the buffer is harmless: it is a hint and never faults.)
      for (size_t b = 0; b < NR * dpad * sizeof(typename S::T); b += 64) _mm_prefetch(pf + b, _MM_HINT_T0);
    }
    if (pf_next) {
      const char* pf = reinterpret_cast<const char*>(pf_next + i * dpad);
      for (size_t b = 0; b < NR * dpad * sizeof(typename S::T); b += 64) _mm_prefetch(pf + b, _MM_HINT_T1);
    }
    tile<S, NQ, NR>(qp, rp, dpad, acc);
    if constexpr (S::kFloat) {
      _mm512_store_ps(res, reduce16(acc));
    } else {
      _mm512_store_si512(res, reduce16(acc));
    }
    if (i + NR <= nrows) {  // fixed-size copies compile to plain vector stores
      for (int qq = 0; qq < NQ; ++qq) std::memcpy(out + (q0 + qq) * ldo + i, res + qq * NR, NR * 4);
    } else {
      for (int qq = 0; qq < NQ; ++qq)
        for (size_t r = 0; i + r < nrows; ++r) out[(q0 + qq) * ldo + i + r] = res[qq * NR + r];
    }
  }
}

// One query over contiguous rows, the row length known at compile time: every
// load is one base register plus an immediate, so the 16 row streams need no
// pointer registers (the generic tile spills them) and the loops unroll fully.
// Same FMA chains and reduce16 as tile<S, 1, 16>: bit-identical scores.
template <class S, size_t DPAD>
void score_stream(const typename S::Q* q, const typename S::T* rows, size_t nrows, float* out) {
  typename S::Acc acc[16];
  size_t i = 0;
  for (; i + 16 <= nrows; i += 16) {
    const typename S::T* p = rows + i * DPAD;
    const char* pf = reinterpret_cast<const char*>(p) + kPrefetchAhead;
    for (int r = 0; r < 16; ++r) acc[r] = S::zero();
    constexpr size_t kPerLine = 64 / (S::kStep * sizeof(typename S::T));  // steps per 64-byte line
    if constexpr (kPerLine == 1) {
      // int8 (VNNI) eats a line per step: the tile's lines in one burst ahead measured best.
#pragma GCC unroll 64
      for (size_t b = 0; b < 16 * DPAD * sizeof(typename S::T); b += 64) _mm_prefetch(pf + b, _MM_HINT_T0);
#pragma GCC unroll 64
      for (size_t j = 0; j < DPAD; j += S::kStep) {
        const auto qv = S::qry(q + j);
#pragma GCC unroll 16
        for (int r = 0; r < 16; ++r) acc[r] = S::mac(acc[r], S::row(p + r * DPAD + j), qv);
      }
    } else {
      // fp32 and fp16 spend longer per line: their prefetches ride along with the loads, one
      // line per row per line consumed, never a burst that fills the load queue (fp16 1.7x at
      // d=512, bench/RESULTS.md).
#pragma GCC unroll 4
      for (size_t j = 0; j < DPAD; j += S::kStep * kPerLine) {
#pragma GCC unroll 16
        for (int r = 0; r < 16; ++r) _mm_prefetch(pf + (r * DPAD + j) * sizeof(typename S::T), _MM_HINT_T0);
#pragma GCC unroll 2
        for (size_t c = 0; c < kPerLine; ++c) {
          const auto qv = S::qry(q + j + c * S::kStep);
#pragma GCC unroll 16
          for (int r = 0; r < 16; ++r) acc[r] = S::mac(acc[r], S::row(p + r * DPAD + j + c * S::kStep), qv);
        }
      }
    }
    if constexpr (S::kFloat) {
      _mm512_storeu_ps(out + i, reduce16(acc));
    } else {
      _mm512_storeu_si512(out + i, reduce16(acc));
    }
  }
  if (i < nrows) score_group<S, 1, 16>(q, 0, rows + i * DPAD, nullptr, nrows - i, DPAD, out + i, 0);
}

template <class S>
bool try_stream(const typename S::Q* q, const typename S::T* rows, size_t nrows, size_t dpad, float* out) {
  return with_dpad(dpad, [&](auto d) { score_stream<S, decltype(d)::value>(q, rows, nrows, out); });
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
    // The first group of a batch prefetches the next contiguous slice.
    const typename S::T* next = !ids && nq >= 4 && r0 + slice < nrows ? rows + (r0 + slice) * dpad : nullptr;
    size_t q0 = 0;
    for (; q0 + 4 <= nq; q0 += 4, next = nullptr) score_group<S, 4, 4>(q, q0, base, sid, nr, dpad, o, ldo, next);
    for (; q0 + 2 <= nq; q0 += 2) score_group<S, 2, 8>(q, q0, base, sid, nr, dpad, o, ldo);
    for (; q0 < nq; ++q0) score_group<S, 1, 16>(q, q0, base, sid, nr, dpad, o, ldo);
  }
}

// ---- int8 batches: transposed panels -----------------------------------------
// At small d the tile's horizontal reduce costs as much as its VNNI work. A
// batch instead packs 32 rows into two panels of [dword t][16 rows] (a 16x16
// transpose of 32-bit words: 4 codes of one row per word) and adds, per query,
// vpdpbusd(query word t broadcast, panel[t]): 16 rows' sums per instruction and
// nothing to reduce. Integer sums are exact, so the scores equal the tile's bit
// for bit and the pack is paid once for the whole batch.
constexpr size_t kPanelRows = 32;

inline void transpose16(__m512i* v) {
  __m512i t[16];
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_unpacklo_epi32(v[2 * k], v[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_epi32(v[2 * k], v[2 * k + 1]);
  }
  for (int k = 0; k < 4; ++k) {
    v[4 * k] = _mm512_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
    v[4 * k + 1] = _mm512_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
    v[4 * k + 2] = _mm512_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
    v[4 * k + 3] = _mm512_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
  }
  for (int k = 0; k < 4; ++k) {
    t[k] = _mm512_shuffle_i32x4(v[k], v[4 + k], 0x88);
    t[4 + k] = _mm512_shuffle_i32x4(v[k], v[4 + k], 0xDD);
    t[8 + k] = _mm512_shuffle_i32x4(v[8 + k], v[12 + k], 0x88);
    t[12 + k] = _mm512_shuffle_i32x4(v[8 + k], v[12 + k], 0xDD);
  }
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm512_shuffle_i32x4(t[k], t[8 + k], 0x88);
    v[8 + k] = _mm512_shuffle_i32x4(t[k], t[8 + k], 0xDD);
    v[4 + k] = _mm512_shuffle_i32x4(t[4 + k], t[12 + k], 0x88);
    v[12 + k] = _mm512_shuffle_i32x4(t[4 + k], t[12 + k], 0xDD);
  }
}

// panel[t * 16 + r] = word t of row r0 + r; rows past nr repeat the last one.
void pack_i8(const int8_t* rows, const uint32_t* ids, size_t r0, size_t nr, size_t dpad, int32_t* panel) {
  const int8_t* rp[16];
  for (size_t r = 0; r < 16; ++r) {
    const size_t i = r0 + std::min(r, nr - 1);
    rp[r] = rows + (ids ? ids[i] : i) * dpad;
  }
  __m512i v[16];
  for (size_t t = 0; t < dpad / 4; t += 16) {
    for (int r = 0; r < 16; ++r) v[r] = _mm512_load_si512(rp[r] + 4 * t);
    transpose16(v);
    for (int k = 0; k < 16; ++k) _mm512_store_si512(panel + (t + k) * 16, v[k]);
  }
}

// Packs rows [r0, r0 + nr), nr <= 32, into the two panels of a batch step and
// sends the next 32 rows towards L2 while this step is scored.
void pack_step(const int8_t* rows, const uint32_t* ids, size_t r0, size_t nr, size_t nrows,
               size_t dpad, int32_t* panel0, int32_t* panel1) {
  pack_i8(rows, ids, r0, std::min<size_t>(nr, 16), dpad, panel0);
  pack_i8(rows, ids, nr > 16 ? r0 + 16 : r0, nr > 16 ? nr - 16 : std::min<size_t>(nr, 16), dpad, panel1);
  const size_t end = std::min(nrows, r0 + 2 * kPanelRows);
  if (!ids) {  // contiguous rows: one run of lines
    const char* p = reinterpret_cast<const char*>(rows + (r0 + kPanelRows) * dpad);
    for (const char* e = reinterpret_cast<const char*>(rows + end * dpad); p < e; p += 64)
      _mm_prefetch(p, _MM_HINT_T1);
    return;
  }
  for (size_t r = r0 + kPanelRows; r < end; ++r) {
    const char* p = reinterpret_cast<const char*>(rows + ids[r] * dpad);
    for (size_t b = 0; b < dpad; b += 64) _mm_prefetch(p + b, _MM_HINT_T1);
  }
}

// Store masks of a step's two 16-row halves when only nr <= 32 rows are real.
inline __mmask16 half_mask(size_t nr, int half) {
  const size_t n = nr > 16 * half ? std::min<size_t>(16, nr - 16 * half) : 0;
  return n == 16 ? 0xFFFF : static_cast<__mmask16>((1u << n) - 1);
}

// acc += u8 x s8 in place. Inline asm: GCC copies the accumulators of an
// unrolled _mm512_dpbusd_epi32 chain from register to register every step.
inline void dpbusd(__m512i& acc, __m512i u8, __m512i s8) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
}

// Raw int32 dots of queries [q0, q0+NQ) with the two panels. qt: the batch's
// query words transposed, qt[t * nqp + q], so the broadcasts of one step are one
// pointer plus small immediates.
template <int NQ>
void panel_group_i8(const int32_t* qt, size_t nqp, size_t q0, const int32_t* panel, size_t words,
                    size_t nr, float* out, size_t ldo) {
  __m512i acc[2 * NQ];
#pragma GCC unroll 16
  for (int i = 0; i < 2 * NQ; ++i) acc[i] = _mm512_setzero_si512();
  const int32_t* p0 = panel;
  const int32_t* p1 = panel + words * 16;
  const int32_t* qp = qt + q0;
  for (size_t t = 0; t < words; ++t, p0 += 16, p1 += 16, qp += nqp) {
    const __m512i a = _mm512_load_si512(p0), b = _mm512_load_si512(p1);
#pragma GCC unroll 8
    for (int i = 0; i < NQ; ++i) {
      const __m512i x = _mm512_set1_epi32(qp[i]);
      dpbusd(acc[2 * i], x, a);
      dpbusd(acc[2 * i + 1], x, b);
    }
  }
  const __mmask16 m0 = half_mask(nr, 0), m1 = half_mask(nr, 1);
#pragma GCC unroll 8
  for (int i = 0; i < NQ; ++i) {
    _mm512_mask_storeu_epi32(out + (q0 + i) * ldo, m0, acc[2 * i]);
    _mm512_mask_storeu_epi32(out + (q0 + i) * ldo + 16, m1, acc[2 * i + 1]);
  }
}

void score_panels_i8(const uint8_t* q, size_t nq, const int8_t* rows, const uint32_t* ids, size_t nrows,
                     size_t dpad, float* out, size_t ldo) {
  const size_t words = dpad / 4;
  thread_local std::vector<int32_t> buf, qbuf;
  int32_t* panel = scratch64(buf, kPanelRows * words);
  qbuf.resize(words * nq);
  for (size_t i = 0; i < nq; ++i)
    for (size_t t = 0; t < words; ++t) std::memcpy(&qbuf[t * nq + i], q + i * dpad + 4 * t, 4);
  for (size_t r0 = 0; r0 < nrows; r0 += kPanelRows) {
    const size_t nr = std::min(kPanelRows, nrows - r0);
    pack_step(rows, ids, r0, nr, nrows, dpad, panel, panel + words * 16);
    float* o = out + r0;
    size_t q0 = 0;
    for (; q0 + 8 <= nq; q0 += 8) panel_group_i8<8>(qbuf.data(), nq, q0, panel, words, nr, o, ldo);
    for (; q0 + 4 <= nq; q0 += 4) panel_group_i8<4>(qbuf.data(), nq, q0, panel, words, nr, o, ldo);
    for (; q0 + 2 <= nq; q0 += 2) panel_group_i8<2>(qbuf.data(), nq, q0, panel, words, nr, o, ldo);
    for (; q0 < nq; ++q0) panel_group_i8<1>(qbuf.data(), nq, q0, panel, words, nr, o, ldo);
  }
}

void score_f32(const float* q, size_t nq, const float* rows, const uint32_t* ids, size_t nrows,
               size_t dpad, float* out, size_t ldo) {
  score_all<F32>(q, nq, rows, ids, nrows, dpad, out, ldo);
}

void score_f16(const float* q, size_t nq, const uint16_t* rows, const uint32_t* ids,
               size_t nrows, size_t dpad, float* out, size_t ldo) {
  if (nq < 4) {
    score_all<F16>(q, nq, rows, ids, nrows, dpad, out, ldo);
    return;
  }
  // A batch widens each L1 slice of rows to fp32 once and scores it as fp32:
  // otherwise every query group converts every row again (2 of its 3 uops).
  const size_t slice = std::max<size_t>(16, kL1Slice / (dpad * sizeof(float)) / 16 * 16);
  thread_local std::vector<float> wide;
  float* w = scratch64(wide, slice * dpad);
  for (size_t r0 = 0; r0 < nrows; r0 += slice) {
    const size_t nr = std::min(slice, nrows - r0);
    for (size_t r = 0; r < nr; ++r) {
      const uint16_t* src = rows + (ids ? ids[r0 + r] : r0 + r) * dpad;
      for (size_t j = 0; j < dpad; j += 16) _mm512_store_ps(w + r * dpad + j, F16::row(src + j));
    }
    score_all<F32>(q, nq, w, nullptr, nr, dpad, out + r0, ldo);
  }
}

// VNNI epilogue: raw = sum((q + 128) x) -> score = qs * rs * (raw - 128 sum(x)).
void epilogue_i8(const float* qscale, size_t nq, const float* rscale, const int32_t* rsum,
                 const uint32_t* ids, size_t nrows, float* out, size_t ldo) {
  for (size_t qi = 0; qi < nq; ++qi) {
    float* o = out + qi * ldo;
    const __m512 qs = _mm512_set1_ps(qscale[qi]);
    size_t i = 0;
    if (!ids) {
      for (; i + 16 <= nrows; i += 16) {
        const __m512i raw = _mm512_loadu_si512(o + i);
        const __m512i dot = _mm512_sub_epi32(raw, _mm512_slli_epi32(_mm512_loadu_si512(rsum + i), 7));
        const __m512 sc = _mm512_mul_ps(_mm512_mul_ps(qs, _mm512_loadu_ps(rscale + i)),
                                        _mm512_cvtepi32_ps(dot));
        _mm512_storeu_ps(o + i, sc);
      }
    }
    for (; i < nrows; ++i) {
      const size_t r = ids ? ids[i] : i;
      int32_t raw;
      std::memcpy(&raw, o + i, 4);
      o[i] = (qscale[qi] * rscale[r]) * static_cast<float>(raw - (rsum[r] << 7));
    }
  }
}

void score_i8(const int8_t* q, const float* qscale, size_t nq, const int8_t* rows,
              const float* rscale, const int32_t* rsum, const uint32_t* ids, size_t nrows,
              size_t dpad, float* out, size_t ldo) {
  thread_local std::vector<uint8_t> shifted;
  shifted.resize(nq * dpad);
  for (size_t i = 0; i < nq * dpad; i += 64)  // dpad is a multiple of 64
    _mm512_storeu_si512(shifted.data() + i, _mm512_xor_si512(_mm512_loadu_si512(q + i),
                                                              _mm512_set1_epi8(static_cast<char>(0x80))));
  if (nq >= 2) {
    score_panels_i8(shifted.data(), nq, rows, ids, nrows, dpad, out, ldo);
  } else {
    score_all<I8>(shifted.data(), nq, rows, ids, nrows, dpad, out, ldo);
  }
  epilogue_i8(qscale, nq, rscale, rsum, ids, nrows, out, ldo);
}

#if SKULENS_AMX
// ---- int8 batches on AMX (Sapphire Rapids and later) ---------------------------
// The panels above are exactly AMX's B-tile layout (K/4 rows of 16 x 4 bytes), so
// a batch runs on the tile unit: TDPBSSD multiplies 16 queries x 64 codes by 64
// codes x 16 rows (16,384 MACs per instruction, s8 x s8, no shift). Integer sums:
// the scores equal the VNNI paths' bit for bit. Tiles: C0-C3 the 2x2 blocks of
// (16 queries, 16 rows), A4-A5 two query blocks, B6-B7 the two panels.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void score_i8_amx(const int8_t* q, const float* qscale, size_t nq, const int8_t* rows,
                  const float* rscale, const int32_t* rsum, const uint32_t* ids, size_t nrows,
                  size_t dpad, float* out, size_t ldo) {
  if (nq < 2) return score_i8(q, qscale, nq, rows, rscale, rsum, ids, nrows, dpad, out, ldo);
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
  // Queries in whole blocks of 32 (two A tiles): a batch of another size is
  // copied once with zero rows after it.
  const size_t words = dpad / 4;
  thread_local std::vector<int8_t> qpad;
  const int8_t* qa = q;
  if (nq % 32) {
    qpad.assign((nq + 31) / 32 * 32 * dpad, 0);
    std::memcpy(qpad.data(), q, nq * dpad);
    qa = qpad.data();
  }
  thread_local std::vector<int32_t> buf;
  int32_t* panel = scratch64(buf, kPanelRows * words);
  int32_t* panel1 = panel + words * 16;
  alignas(64) int32_t c[4][16 * 16];
  alignas(64) float rs[kPanelRows] = {};  // the step's row scales
  for (size_t r0 = 0; r0 < nrows; r0 += kPanelRows) {
    const size_t nr = std::min(kPanelRows, nrows - r0);
    pack_step(rows, ids, r0, nr, nrows, dpad, panel, panel1);
    for (size_t j = 0; j < nr; ++j) rs[j] = rscale[ids ? ids[r0 + j] : r0 + j];
    for (size_t q0 = 0; q0 < nq; q0 += 32) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      const int8_t* a = qa + q0 * dpad;
      for (size_t k = 0; k < dpad; k += 64) {
        _tile_loadd(4, a + k, dpad);
        _tile_loadd(5, a + 16 * dpad + k, dpad);
        _tile_loadd(6, panel + k / 4 * 16, 64);
        _tile_loadd(7, panel1 + k / 4 * 16, 64);
        _tile_dpbssd(0, 4, 6);
        _tile_dpbssd(1, 4, 7);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
      }
      _tile_stored(0, c[0], 64);
      _tile_stored(1, c[1], 64);
      _tile_stored(2, c[2], 64);
      _tile_stored(3, c[3], 64);
      // Scores straight from the tiles: qs * rs * dot, as epilogue_i8 computes them.
      const __mmask16 m0 = half_mask(nr, 0), m1 = half_mask(nr, 1);
      for (size_t i = 0; i < 32 && q0 + i < nq; ++i) {
        const int blk = i < 16 ? 0 : 2;
        const __m512 qs = _mm512_set1_ps(qscale[q0 + i]);
        float* o = out + (q0 + i) * ldo + r0;
        _mm512_mask_storeu_ps(o, m0, _mm512_mul_ps(_mm512_mul_ps(qs, _mm512_load_ps(rs)),
                                                   _mm512_cvtepi32_ps(_mm512_load_si512(c[blk] + (i % 16) * 16))));
        _mm512_mask_storeu_ps(o + 16, m1, _mm512_mul_ps(_mm512_mul_ps(qs, _mm512_load_ps(rs + 16)),
                                                        _mm512_cvtepi32_ps(_mm512_load_si512(c[blk + 1] + (i % 16) * 16))));
      }
    }
  }
  _tile_release();
}
#endif  // SKULENS_AMX

size_t select_gt(const float* s, size_t n, float thr, uint32_t* idx) {
  const __m512 t = _mm512_set1_ps(thr);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i pos = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  size_t cnt = 0, i = 0;
  for (; i + 16 <= n; i += 16, pos = _mm512_add_epi32(pos, step)) {
    const __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + i), t, _CMP_GT_OQ);
    if (m) {
      _mm512_mask_compressstoreu_epi32(idx + cnt, m, pos);
      cnt += static_cast<size_t>(__builtin_popcount(m));
    }
  }
  for (; i < n; ++i)
    if (s[i] > thr) idx[cnt++] = static_cast<uint32_t>(i);
  return cnt;
}

uint64_t stream_read(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 256 <= bytes; i += 256) {
    a0 = _mm512_xor_si512(a0, _mm512_loadu_si512(c + i));
    a1 = _mm512_xor_si512(a1, _mm512_loadu_si512(c + i + 64));
    a2 = _mm512_xor_si512(a2, _mm512_loadu_si512(c + i + 128));
    a3 = _mm512_xor_si512(a3, _mm512_loadu_si512(c + i + 192));
  }
  a0 = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
  uint64_t h = static_cast<uint64_t>(_mm512_reduce_or_epi64(a0));
  for (; i < bytes; ++i) h ^= static_cast<unsigned char>(c[i]);
  return h;
}

float dot_f32(const float* a, const float* b, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  if (i + 16 <= n) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    i += 16;
  }
  if (i < n) {  // masked tail: no scalar loop
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

}  // namespace

const Kernels kAvx512Kernels = {"avx512", score_f32, score_f16, score_i8, select_gt, stream_read, dot_f32};
#if SKULENS_AMX
const Kernels kAmxKernels = {"amx", score_f32, score_f16, score_i8_amx, select_gt, stream_read, dot_f32};
#endif

}  // namespace skulens
