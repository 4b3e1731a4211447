// Exact top-k cosine index over one contiguous row-major buffer.
//
// Vectors are L2-normalised on the way in and stored as fp32, fp16 or int8
// (symmetric, one scale per vector). Ids are row numbers: stable across
// remove (a tombstone) and reuse (set), renumbered only by compact(), which
// returns the remap. Searches take a shared lock and writes an exclusive one,
// so concurrent callers never see a torn buffer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "skulens/allow.h"
#include "skulens/simd.h"

namespace skulens {

enum class Storage { F32, F16, I8 };

Storage parse_storage(const std::string& name);
const char* storage_name(Storage s);

struct SearchResult {
  size_t nq = 0, k = 0;          // k = columns; rows short of k hits pad with -inf / -1
  std::vector<float> scores;     // [nq][k]
  std::vector<int64_t> ids;      // [nq][k]
};

class ExactIndex {
 public:
  // threads = 0: one per hardware thread. simd = nullptr: best for this CPU.
  ExactIndex(size_t dim, Storage storage, size_t threads = 0, const char* simd = nullptr);
  ~ExactIndex();
  ExactIndex(const ExactIndex&) = delete;
  ExactIndex& operator=(const ExactIndex&) = delete;

  size_t dim() const { return dim_; }
  Storage storage() const { return storage_; }
  const char* simd() const { return kernels_->name; }
  size_t threads() const { return threads_; }
  void set_threads(size_t t);
  size_t row_bytes() const { return row_bytes_; }
  size_t size() const;    // live rows
  size_t ntotal() const;  // rows ever added and not compacted away (the id space)
  bool contains(int64_t id) const;

  // Appends n vectors [n][dim]; returns the first id (ids are consecutive).
  int64_t add(const float* x, size_t n);
  // Overwrites rows ids[i] < ntotal() (reviving removed ones) with x[i].
  void set(const int64_t* ids, const float* x, size_t n);
  // Tombstones ids; returns how many were live. Unknown ids are an error.
  size_t remove(const int64_t* ids, size_t n);
  // Drops tombstones; returns remap[old_id] = new_id or -1.
  std::vector<int64_t> compact();

  // allow: the ids that may be returned; nullptr = every live row.
  SearchResult search(const float* q, size_t nq, size_t k, const Allow* allow = nullptr) const;
  // Scores of one query against the given live ids, in their order.
  void rerank(const float* q, const int64_t* ids, size_t n, float* out) const;
  // The stored vectors (dequantised) of live ids.
  void reconstruct(const int64_t* ids, size_t n, float* out) const;
  // Reads the whole stored buffer once with the same threads (benchmark floor).
  uint64_t stream_read() const;

  // The stored rows as they are (codes, scales, tombstones) in one binary file,
  // so a restart restores them bit for bit without re-encoding. load() replaces
  // the contents; it throws std::runtime_error on a file of another dim or
  // storage, or one that is short or damaged in its header.
  void save(const std::string& path) const;
  void load(const std::string& path);

 private:
  struct Prepared;
  Prepared prepare(const float* q, size_t nq) const;
  void encode_row(const float* x, size_t row);
  void validate_rows(const float* x, size_t n, const char* what) const;
  void check_ids(const int64_t* ids, size_t n, bool need_live) const;
  void reserve_rows(size_t rows);
  void score(const Prepared& p, size_t q0, size_t nq, const uint32_t* ids, size_t row0,
             size_t nrows, float* out, size_t ldo) const;
  bool live(size_t row) const { return (live_[row >> 6] >> (row & 63)) & 1u; }

  const size_t dim_;
  const Storage storage_;
  const Kernels* kernels_;
  size_t threads_;
  size_t elem_bytes_, row_bytes_, dpad_;
  size_t nrows_ = 0, nlive_ = 0, cap_rows_ = 0;
  unsigned char* data_ = nullptr;  // cap_rows_ * row_bytes_, 64-byte aligned
  std::vector<float> scale_;       // int8: per-row scale
  std::vector<int32_t> rsum_;      // int8: per-row sum of codes
  std::vector<uint64_t> live_;     // bitset of live rows
  mutable std::shared_mutex mu_;
};

}  // namespace skulens
