// Run-time CPU feature detection and kernel selection.
#include <cstdlib>
#include <cstring>

#include "skulens/simd.h"

namespace skulens {
namespace {

#if defined(__x86_64__) || defined(_M_X64)
bool has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");
}
bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}
#endif

const Kernels& detect() {
  const char* cap = std::getenv("SKULENS_SIMD");
  if (cap && *cap) {
    if (const Kernels* k = kernels_by_name(cap)) return *k;
    // Unknown or unsupported cap: fall through to the best available.
  }
#if defined(__x86_64__) || defined(_M_X64)
  if (has_avx512()) return kAvx512Kernels;
  if (has_avx2()) return kAvx2Kernels;
#endif
  return kScalarKernels;
}

}  // namespace

const Kernels* kernels_by_name(const char* name) {
  if (std::strcmp(name, "scalar") == 0) return &kScalarKernels;
#if defined(__x86_64__) || defined(_M_X64)
  if (std::strcmp(name, "avx2") == 0 && has_avx2()) return &kAvx2Kernels;
  if (std::strcmp(name, "avx512") == 0 && has_avx512()) return &kAvx512Kernels;
#endif
  return nullptr;
}

const Kernels& best_kernels() {
  static const Kernels& k = detect();
  return k;
}

}  // namespace skulens
