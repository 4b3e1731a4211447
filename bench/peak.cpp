// Compute ceilings of one core for the exact kernel's inner steps, so bench/RESULTS.md can
// say which targets arithmetic alone rules out. AVX-512:
//   fp32  FMA on 16 floats                       (16 MACs)
//   fp16  widen 16 halves (vcvtph2ps) + FMA      (16 MACs)
//   int8  VNNI vpdpbusd on 64 bytes              (64 MACs)
// and the AVX2 file's steps (`--avx2`: the only ones run, for a CPU without AVX-512):
//   fp32  FMA on 8 floats, fp16 vcvtph2ps + FMA on 8, int8 widen 16 bytes + vpmaddwd + add, and
//   int8 as the AVX2 kernel does it: abs + sign + vpmaddubsw + vpmaddwd + add on 32 bytes
// Twelve independent chains, operands in L1: no memory in the way.
// Build: g++ -O2 bench/peak.cpp -o /tmp/peak && /tmp/peak [--avx2]  (each part carries its own
// target attribute, so the binary starts on an AVX2-only CPU)
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>

#define REP(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
alignas(64) static uint16_t halves[12 * 16];

static double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

alignas(64) static int8_t bytes[12 * 16 + 16];  // 32-byte loads at i * 16

__attribute__((target("avx2,fma,f16c"), noinline)) static void avx2(long n) {
  {
#define YDECL(i) __m256 a##i = _mm256_set1_ps(i * 1e-3f);
    REP(YDECL)
    const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-6f);
    const auto t = std::chrono::steady_clock::now();
    for (long k = 0; k < n; ++k) {
#define YSTEP(i) a##i = _mm256_fmadd_ps(a##i, x, y);
      REP(YSTEP)
      __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3));
    }
    const double s = seconds_since(t);
    float sink = 0;
#define YSUM(i) { alignas(32) float w[8]; _mm256_store_ps(w, a##i); for (float v : w) sink += v; }
    REP(YSUM)
    std::printf("avx2 fp32 fma        %6.1f GMAC/s  (%g)\n", 12.0 * 8 * n / s / 1e9, sink);
  }
  {
    REP(YDECL)
    const __m256 y = _mm256_set1_ps(1e-9f);
    const auto t = std::chrono::steady_clock::now();
    for (long k = 0; k < n / 2; ++k) {
#define YCSTEP(i) a##i = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_load_si128( \
                      reinterpret_cast<const __m128i*>(halves + (i) * 8))), y, a##i);
      REP(YCSTEP)
      __asm__ volatile("" ::: "memory");
    }
    const double s = seconds_since(t);
    float sink = 0;
    REP(YSUM)
    std::printf("avx2 fp16 cvt + fma  %6.1f GMAC/s  (%g)\n", 12.0 * 8 * (n / 2) / s / 1e9, sink);
  }
  {
#define YIDECL(i) __m256i b##i = _mm256_set1_epi32(i);
    REP(YIDECL)
    const __m256i qv = _mm256_set1_epi16(3);
    const auto t = std::chrono::steady_clock::now();
    for (long k = 0; k < n / 2; ++k) {
#define YISTEP(i) b##i = _mm256_add_epi32(b##i, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_load_si128( \
                      reinterpret_cast<const __m128i*>(bytes + (i) * 16))), qv));
      REP(YISTEP)
      __asm__ volatile("" ::: "memory");
    }
    const double s = seconds_since(t);
    long long sink = 0;
#define YISUM(i) { alignas(32) int32_t w[8]; _mm256_store_si256(reinterpret_cast<__m256i*>(w), b##i); for (int v : w) sink += v; }
    REP(YISUM)
    std::printf("avx2 int8 widen+madd %6.1f GMAC/s  (%lld)\n", 12.0 * 16 * (n / 2) / s / 1e9, sink);
  }
  {
    REP(YIDECL)
    const __m256i ones = _mm256_set1_epi16(1), qb = _mm256_set1_epi8(-3);
    const auto t = std::chrono::steady_clock::now();
    for (long k = 0; k < n / 4; ++k) {
#define YSSTEP(i) { const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(bytes + (i) * 16)); \
        b##i = _mm256_add_epi32(b##i, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(x), \
                                _mm256_sign_epi8(qb, x)), ones)); }
      REP(YSSTEP)
      __asm__ volatile("" ::: "memory");
    }
    const double s = seconds_since(t);
    long long sink = 0;
    REP(YISUM)
    std::printf("avx2 int8 maddubs    %6.1f GMAC/s  (%lld)\n", 12.0 * 32 * (n / 4) / s / 1e9, sink);
  }
}

__attribute__((target("avx512f,avx512vnni,f16c,fma"), noinline)) static void avx512(long n) {
  {
#define DECL(i) __m512 a##i = _mm512_set1_ps(i * 1e-3f);
    REP(DECL)
    const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-6f);
    const auto t = std::chrono::steady_clock::now();
    for (long k = 0; k < n; ++k) {
#define STEP(i) a##i = _mm512_fmadd_ps(a##i, x, y);
      REP(STEP)
      __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3));
    }
    const double s = seconds_since(t);
    float sink = 0;
#define SUM(i) sink += _mm512_reduce_add_ps(a##i);
    REP(SUM)
    std::printf("fp32 fma        %6.1f GMAC/s  (%g)\n", 12.0 * 16 * n / s / 1e9, sink);
  }
  {
    REP(DECL)
    const __m512 y = _mm512_set1_ps(1e-9f);
    const auto t = std::chrono::steady_clock::now();
    for (long k = 0; k < n / 2; ++k) {
#define CSTEP(i) a##i = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_load_si256( \
                     reinterpret_cast<const __m256i*>(halves + (i) * 16))), y, a##i);
      REP(CSTEP)
      __asm__ volatile("" ::: "memory");
    }
    const double s = seconds_since(t);
    float sink = 0;
    REP(SUM)
    std::printf("fp16 cvt + fma  %6.1f GMAC/s  (%g)\n", 12.0 * 16 * (n / 2) / s / 1e9, sink);
  }
  {
#define IDECL(i) __m512i b##i = _mm512_set1_epi32(i);
    REP(IDECL)
    const __m512i u = _mm512_set1_epi8(3), v = _mm512_set1_epi8(5);
    const auto t = std::chrono::steady_clock::now();
    for (long k = 0; k < n / 2; ++k) {
#define ISTEP(i) b##i = _mm512_dpbusd_epi32(b##i, u, v);
      REP(ISTEP)
      __asm__ volatile("" : "+v"(b0), "+v"(b1), "+v"(b2), "+v"(b3));
    }
    const double s = seconds_since(t);
    long long sink = 0;
#define ISUM(i) sink += _mm512_reduce_add_epi32(b##i);
    REP(ISUM)
    std::printf("int8 vnni       %6.1f GMAC/s  (%lld)\n", 12.0 * 64 * (n / 2) / s / 1e9, sink);
  }
}

int main(int argc, char** argv) {
  const long n = 100000000;
  for (auto& h : halves) h = 0x3c00;  // 1.0
  for (auto& b : bytes) b = 1;
  avx2(n);
  if (argc > 1 && std::strcmp(argv[1], "--avx2") == 0) return 0;
  avx512(n);
}
