// Run-time CPU feature detection and kernel selection.
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

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
// AMX needs the CPU (CPUID.7.0:EDX bits 24 tile, 25 int8) and the OS: Linux
// hands out the tile state only to a process that asks (arch_prctl, once).
bool has_amx() {
#if !SKULENS_AMX
  return false;  // compiler without AMX support: no table to run
#endif
  static const bool ok = [] {
    if (!has_avx512()) return false;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!((d >> 24) & 1u) || !((d >> 25) & 1u)) return false;
#if defined(__linux__) && defined(SYS_arch_prctl)
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return ok;
}
bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}
// AVX-VNNI: CPUID.(EAX=7, ECX=1):EAX bit 4 (the VEX-encoded vpdpbusd on 256-bit registers).
bool has_avx2_vnni() {
#if !SKULENS_AVX2_VNNI
  return false;  // compiler without -mavxvnni: no table to run
#endif
  unsigned a, b, c, d;
  return has_avx2() && __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 4) & 1u);
}
#endif

#if defined(__aarch64__)
// The dot-product extension (sdot/udot, ARMv8.2 optional, in every Neoverse and Graviton 2+),
// as the kernel reports it to user space.
bool has_dotprod() {
#if defined(__linux__)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
  return false;
#endif
}
#endif

const Kernels& detect() {
  const char* cap = std::getenv("SKULENS_SIMD");
  if (cap && *cap) {
    if (const Kernels* k = kernels_by_name(cap)) return *k;
    // Unknown or unsupported cap: fall through to the best available.
  }
#if defined(__x86_64__) || defined(_M_X64)
#if SKULENS_AMX
  if (has_amx()) return kAmxKernels;
#endif
  if (has_avx512()) return kAvx512Kernels;
#if SKULENS_AVX2_VNNI
  if (has_avx2_vnni()) return kAvx2VnniKernels;
#endif
  if (has_avx2()) return kAvx2Kernels;
#endif
#if defined(__aarch64__)
  return has_dotprod() ? kNeonDotKernels : kNeonKernels;
#endif
  return kScalarKernels;
}

}  // namespace

const Kernels* kernels_by_name(const char* name) {
  if (std::strcmp(name, "scalar") == 0) return &kScalarKernels;
#if defined(__x86_64__) || defined(_M_X64)
  if (std::strcmp(name, "avx2") == 0 && has_avx2()) return &kAvx2Kernels;
#if SKULENS_AVX2_VNNI
  if (std::strcmp(name, "avx2_vnni") == 0 && has_avx2_vnni()) return &kAvx2VnniKernels;
#endif
  if (std::strcmp(name, "avx512") == 0 && has_avx512()) return &kAvx512Kernels;
#if SKULENS_AMX
  if (std::strcmp(name, "amx") == 0 && has_amx()) return &kAmxKernels;
#endif
#endif
#if defined(__aarch64__)
  if (std::strcmp(name, "neon") == 0) return &kNeonKernels;
  if (std::strcmp(name, "neon_dot") == 0 && has_dotprod()) return &kNeonDotKernels;
#endif
  return nullptr;
}

const Kernels& best_kernels() {
  static const Kernels& k = detect();
  return k;
}

}  // namespace skulens
