// C++ unit tests of the kernel core (run by ctest): every SIMD table against
// a double-precision reference, the top-k collector and the thread pool.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "skulens/exact_index.h"
#include "skulens/fp16.h"
#include "skulens/simd.h"
#include "skulens/thread_pool.h"
#include "skulens/topk.h"

using namespace skulens;

static int failures = 0;
#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                   \
      std::fprintf(stderr, "\n");                          \
      ++failures;                                          \
    }                                                      \
  } while (0)

template <class T>
T* aligned(size_t n) {
  void* p = std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
  std::fill_n(static_cast<char*>(p), (n * sizeof(T) + 63) / 64 * 64, 0);
  return static_cast<T*>(p);
}

static void unit(float* v, size_t n) {
  double s = 0;
  for (size_t j = 0; j < n; ++j) s += double(v[j]) * v[j];
  for (size_t j = 0; j < n; ++j) v[j] = static_cast<float>(v[j] / std::sqrt(s));
}

static void test_kernels(const Kernels& k) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  // rows are whole 64-byte lines for every type; 7 queries take the FMA tiles,
  // 40 the batch paths (panels, AMX: one whole block of 32 and a partial one).
  for (size_t dpad : {64u, 128u, 192u, 512u})
  for (size_t nq : {7u, 40u}) {
    const size_t nrows = 45;
    float* q = aligned<float>(nq * dpad);
    float* rows = aligned<float>(nrows * dpad);
    uint16_t* rows16 = aligned<uint16_t>(nrows * dpad);
    int8_t* q8 = aligned<int8_t>(nq * dpad);
    int8_t* rows8 = aligned<int8_t>(nrows * dpad);
    std::vector<float> qs(nq, 0.5f), rs(nrows);
    std::vector<int32_t> rsum(nrows);
    for (size_t i = 0; i < nq * dpad; ++i) {
      q[i] = nd(rng);
      q8[i] = static_cast<int8_t>(static_cast<int>(nd(rng) * 40) % 127);
    }
    // Unit vectors, as the index stores and queries them: tolerances can be tight.
    for (size_t a = 0; a < nq; ++a) unit(q + a * dpad, dpad);
    for (size_t r = 0; r < nrows; ++r) {
      rs[r] = 0.01f * static_cast<float>(r + 1);
      for (size_t j = 0; j < dpad; ++j) rows[r * dpad + j] = nd(rng);
      unit(rows + r * dpad, dpad);
      for (size_t j = 0; j < dpad; ++j) {
        rows16[r * dpad + j] = f32_to_f16(rows[r * dpad + j]);
        rows8[r * dpad + j] = static_cast<int8_t>(static_cast<int>(nd(rng) * 40) % 127);
        rsum[r] += rows8[r * dpad + j];
      }
    }
    // The extreme codes (+-127 everywhere): the pairwise int16 sums of a maddubs table sit at
    // their largest (2 * 127 * 127) and must not saturate.
    for (size_t j = 0; j < dpad; ++j) {
      rsum[0] -= rows8[j] - (-127);
      rsum[1] -= rows8[dpad + j] - (j % 2 ? 127 : -127);
      rows8[j] = -127;
      rows8[dpad + j] = static_cast<int8_t>(j % 2 ? 127 : -127);
      q8[j] = 127;
      q8[dpad + j] = static_cast<int8_t>(j % 2 ? -127 : 127);
    }
    std::vector<uint32_t> ids = {44, 0, 3, 3, 17, 9, 30, 1};
    for (const uint32_t* idp : std::vector<const uint32_t*>{nullptr, ids.data()}) {
      const size_t n = idp ? ids.size() : nrows;
      std::vector<float> o32(nq * n), o16(nq * n), o8(nq * n);
      k.score_f32(q, nq, rows, idp, n, dpad, o32.data(), n);
      k.score_f16(q, nq, rows16, idp, n, dpad, o16.data(), n);
      k.score_i8(q8, qs.data(), nq, rows8, rs.data(), rsum.data(), idp, n, dpad, o8.data(), n);
      for (size_t a = 0; a < nq; ++a)
        for (size_t i = 0; i < n; ++i) {
          const size_t r = idp ? idp[i] : i;
          double d32 = 0, d16 = 0;
          long d8 = 0;
          for (size_t j = 0; j < dpad; ++j) {
            d32 += double(q[a * dpad + j]) * rows[r * dpad + j];
            d16 += double(q[a * dpad + j]) * f16_to_f32(rows16[r * dpad + j]);
            d8 += long(q8[a * dpad + j]) * rows8[r * dpad + j];
          }
          CHECK(std::fabs(o32[a * n + i] - d32) < 2e-6, "%s f32 d=%zu q=%zu r=%zu: %f vs %f", k.name, dpad, a, r, o32[a * n + i], d32);
          CHECK(std::fabs(o16[a * n + i] - d16) < 2e-6, "%s f16 d=%zu: %f vs %f", k.name, dpad, o16[a * n + i], d16);
          const float want8 = (qs[a] * rs[r]) * static_cast<float>(d8);
          CHECK(o8[a * n + i] == want8, "%s i8 d=%zu: %f vs %f", k.name, dpad, o8[a * n + i], want8);
        }
    }
    std::free(q); std::free(rows); std::free(rows16); std::free(q8); std::free(rows8);
  }
  // select_gt finds exactly the positions above the threshold.
  std::vector<float> s(1000);
  for (auto& v : s) v = nd(rng);
  std::vector<uint32_t> idx(s.size());
  const size_t m = k.select_gt(s.data(), s.size(), 1.0f, idx.data());
  size_t want = 0;
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] > 1.0f) CHECK(idx[want++] == i, "%s select_gt order", k.name);
  CHECK(m == want, "%s select_gt count %zu vs %zu", k.name, m, want);
}

static void test_topk() {
  TopK t(3);
  const float sc[] = {0.1f, 0.9f, 0.5f, 0.9f, 0.7f, 0.2f, 0.95f};
  for (int i = 0; i < 7; ++i)
    if (sc[i] > t.threshold()) t.push(sc[i], i);
  Hit out[3];
  CHECK(t.finish(out) == 3, "topk size");
  CHECK(out[0].id == 6 && out[1].id == 1 && out[2].id == 3, "topk order %lld %lld %lld",
        (long long)out[0].id, (long long)out[1].id, (long long)out[2].id);
}

static void test_pool() {
  std::vector<int> hit(100, 0);
  ThreadPool::global().run(100, [&](size_t i) { hit[i]++; });
  for (int h : hit) CHECK(h == 1, "pool ran a task %d times", h);
  bool threw = false;
  try {
    ThreadPool::global().run(8, [](size_t i) { if (i == 5) throw std::runtime_error("x"); });
  } catch (const std::runtime_error&) {
    threw = true;
  }
  CHECK(threw, "pool lost an exception");
}

static void test_index_end_to_end() {
  ExactIndex ix(10, Storage::F32, 2);
  std::vector<float> x(100 * 10);
  for (size_t i = 0; i < 100; ++i) x[i * 10 + i % 10] = 1.0f + i;  // 10 groups of parallel vectors
  ix.add(x.data(), 100);
  const int64_t rm[] = {3};
  ix.remove(rm, 1);
  SearchResult r = ix.search(x.data() + 3 * 10, 1, 5);
  CHECK(r.k == 5, "k");
  // Ties (all cosine 1) come back in id order, skipping the removed id 3.
  const int64_t want[] = {13, 23, 33, 43, 53};
  for (int i = 0; i < 5; ++i) CHECK(r.ids[i] == want[i] && r.scores[i] == 1.0f, "tie order at %d: %lld", i, (long long)r.ids[i]);
  bool threw = false;
  try {
    std::vector<float> z(10, 0.0f);
    ix.add(z.data(), 1);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  CHECK(threw && ix.size() == 99, "zero vector accepted");
}

int main() {
  for (const char* name : kTableNames) {
    if (const Kernels* k = kernels_by_name(name)) {
      test_kernels(*k);
      std::printf("kernels %s checked\n", name);
    } else {
      std::printf("kernels %s: not supported by this CPU, not run\n", name);
    }
  }
  // Unless capped, the default is the best table this CPU runs (run-time detection); a cap this
  // CPU can run is obeyed.
  const char* cap = std::getenv("SKULENS_SIMD");
  if (cap && kernels_by_name(cap)) {
    CHECK(std::string(best_kernels().name) == cap, "SKULENS_SIMD=%s but the default is %s", cap, best_kernels().name);
    std::printf("default table: %s (SKULENS_SIMD)\n", best_kernels().name);
  } else if (!cap) {
    const char* best = nullptr;
    for (const char* name : kTableNames)
      if (kernels_by_name(name)) best = name;
    CHECK(std::string(best_kernels().name) == best, "default table %s, best runnable %s", best_kernels().name, best);
    std::printf("default table: %s\n", best_kernels().name);
  }
  test_topk();
  test_pool();
  test_index_end_to_end();
  std::printf(failures ? "%d failures\n" : "all passed\n", failures);
  return failures ? 1 : 0;
}
