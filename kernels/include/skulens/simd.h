// Per-ISA scoring kernels and run-time dispatch.
//
// Each ISA lives in its own translation unit compiled with its own target flags
// (kernels/src/kernels_*.cpp); the driver picks the best table the CPU supports
// at run time, so one wheel runs on any x86-64 or aarch64.
#pragma once
#include <cstddef>
#include <cstdint>

namespace skulens {

// Rows are stored row-major, each padded with zeros to kRowAlign bytes so every
// row starts on a cache line and SIMD loops need no tail handling.
constexpr size_t kRowAlign = 64;

// Scores a block of rows against nq queries:
//   out[q * ldo + i] = <query q, row i>   for q < nq, i < nrows
// Row i is rows + (ids ? ids[i] : i) * dpad (elements). dpad is a multiple of
// kRowAlign bytes; queries are [nq][dpad] with zero padding.
struct Kernels {
  const char* name;
  void (*score_f32)(const float* q, size_t nq, const float* rows,
                    const uint32_t* ids, size_t nrows, size_t dpad, float* out,
                    size_t ldo);
  void (*score_f16)(const float* q, size_t nq, const uint16_t* rows,
                    const uint32_t* ids, size_t nrows, size_t dpad, float* out,
                    size_t ldo);
  // int8: queries are symmetric int8 with one scale each; rows carry a scale
  // and the sum of their codes (the VNNI path needs it to undo its u8 offset).
  void (*score_i8)(const int8_t* q, const float* qscale, size_t nq,
                   const int8_t* rows, const float* rscale, const int32_t* rsum,
                   const uint32_t* ids, size_t nrows, size_t dpad, float* out,
                   size_t ldo);
  // Writes the positions i with s[i] > thr to idx; returns how many.
  size_t (*select_gt)(const float* s, size_t n, float thr, uint32_t* idx);
  // Reads every byte once (the memory floor for benchmarks); returns a checksum.
  uint64_t (*stream_read)(const void* p, size_t bytes);
  // <a, b> over n floats, no alignment or padding assumed (the HNSW walk's distance).
  float (*dot_f32)(const float* a, const float* b, size_t n);
};

extern const Kernels kScalarKernels;
#if defined(__x86_64__) || defined(_M_X64)
extern const Kernels kAvx2Kernels;
extern const Kernels kAvx2VnniKernels;  // avx2 with int8 by AVX-VNNI (SKULENS_AVX2_VNNI builds)
extern const Kernels kAvx512Kernels;
extern const Kernels kAmxKernels;  // avx512 with int8 batches on AMX tiles (SKULENS_AMX builds)
#endif
#if defined(__aarch64__)
extern const Kernels kNeonKernels;     // every aarch64 CPU (Advanced SIMD is part of ARMv8-A)
extern const Kernels kNeonDotKernels;  // int8 by sdot, where the CPU has the dot-product extension
#endif

// Every table's name, worst to best per architecture (kernels_by_name answers for those this
// CPU runs).
constexpr const char* kTableNames[] = {"scalar", "avx2", "avx2_vnni", "avx512", "amx", "neon", "neon_dot"};

// Best table for this CPU; SKULENS_SIMD=scalar|avx2|avx2_vnni|avx512|amx (x86-64) or
// scalar|neon|neon_dot (aarch64) caps the choice
// (tests use it to exercise every path on one machine).
const Kernels& best_kernels();
// Table by name, or nullptr if this CPU cannot run it.
const Kernels* kernels_by_name(const char* name);

}  // namespace skulens
