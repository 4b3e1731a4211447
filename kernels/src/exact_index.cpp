// Driver of the exact index: storage, query preparation, blocking, filters,
// threads and top-k. The arithmetic lives in the per-ISA kernels (simd.h).
#include "skulens/exact_index.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "skulens/fp16.h"
#include "skulens/thread_pool.h"
#include "skulens/topk.h"

namespace skulens {
namespace {

constexpr size_t kBlockBytes = 64 * 1024;        // row block kept hot while a batch scans it
constexpr size_t kMinChunkBytes = 512 * 1024;    // below this a thread costs more than it saves
constexpr size_t kQueryGroup = 64;               // queries scored together per block
constexpr size_t kMaxRows = size_t{1} << 32;     // ids travel as uint32 inside the kernels

size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

struct Free {
  void operator()(void* p) const { std::free(p); }
};
template <class T>
std::unique_ptr<T[], Free> aligned_array(size_t n) {
  void* p = std::aligned_alloc(kRowAlign, round_up(std::max<size_t>(n * sizeof(T), 1), kRowAlign));
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, round_up(std::max<size_t>(n * sizeof(T), 1), kRowAlign));
  return std::unique_ptr<T[], Free>(static_cast<T*>(p));
}

// L2 norm in double, with the checks every vector entering the index needs.
double checked_norm(const float* x, size_t dim, size_t row, const char* what) {
  double s = 0;
  for (size_t j = 0; j < dim; ++j) {
    if (!std::isfinite(x[j]))
      throw std::invalid_argument(std::string(what) + " " + std::to_string(row) +
                                  " has a non-finite value (NaN or Inf) at position " +
                                  std::to_string(j));
    s += static_cast<double>(x[j]) * x[j];
  }
  if (s == 0)
    throw std::invalid_argument(std::string(what) + " " + std::to_string(row) +
                                " is all zeros: cosine similarity is undefined");
  return std::sqrt(s);
}

// Symmetric int8 codes of a unit vector: scale = max|x| / 127.
float quantize_i8(const float* x, double inv_norm, size_t dim, int8_t* out, int32_t* sum) {
  double amax = 0;
  for (size_t j = 0; j < dim; ++j) amax = std::max(amax, std::fabs(x[j] * inv_norm));
  const double scale = amax / 127.0;
  int32_t s = 0;
  for (size_t j = 0; j < dim; ++j) {
    const long v = std::lrint(x[j] * inv_norm / scale);
    out[j] = static_cast<int8_t>(std::clamp(v, -127L, 127L));
    s += out[j];
  }
  if (sum) *sum = s;
  return static_cast<float>(scale);
}

}  // namespace

Storage parse_storage(const std::string& name) {
  if (name == "fp32") return Storage::F32;
  if (name == "fp16") return Storage::F16;
  if (name == "int8") return Storage::I8;
  throw std::invalid_argument("storage must be 'fp32', 'fp16' or 'int8', got '" + name + "'");
}

const char* storage_name(Storage s) {
  switch (s) {
    case Storage::F32: return "fp32";
    case Storage::F16: return "fp16";
    case Storage::I8: return "int8";
  }
  return "?";
}

struct ExactIndex::Prepared {
  std::unique_ptr<float[], Free> f;    // fp32/fp16: unit queries [nq][dpad]
  std::unique_ptr<int8_t[], Free> c;   // int8: codes [nq][dpad]
  std::vector<float> scale;            // int8: per-query scale
};

ExactIndex::ExactIndex(size_t dim, Storage storage, size_t threads, const char* simd)
    : dim_(dim), storage_(storage), kernels_(&best_kernels()) {
  if (dim == 0 || dim > 65536) throw std::invalid_argument("dim must be in 1..65536, got " + std::to_string(dim));
  if (simd && *simd) {
    kernels_ = kernels_by_name(simd);
    if (!kernels_)
      throw std::invalid_argument(std::string("SIMD path '") + simd +
                                  "' is unknown or not supported by this CPU (scalar, avx2, avx512, amx)");
  }
  set_threads(threads);
  elem_bytes_ = storage == Storage::F32 ? 4 : storage == Storage::F16 ? 2 : 1;
  row_bytes_ = round_up(dim * elem_bytes_, kRowAlign);
  dpad_ = row_bytes_ / elem_bytes_;
}

ExactIndex::~ExactIndex() { std::free(data_); }

void ExactIndex::set_threads(size_t t) {
  if (t == 0) t = std::max(1u, std::thread::hardware_concurrency());
  threads_ = std::min<size_t>(t, 256);
}

size_t ExactIndex::size() const {
  std::shared_lock<std::shared_mutex> g(mu_);
  return nlive_;
}

size_t ExactIndex::ntotal() const {
  std::shared_lock<std::shared_mutex> g(mu_);
  return nrows_;
}

bool ExactIndex::contains(int64_t id) const {
  std::shared_lock<std::shared_mutex> g(mu_);
  return id >= 0 && static_cast<size_t>(id) < nrows_ && live(static_cast<size_t>(id));
}

void ExactIndex::validate_rows(const float* x, size_t n, const char* what) const {
  for (size_t i = 0; i < n; ++i) checked_norm(x + i * dim_, dim_, i, what);
}

void ExactIndex::encode_row(const float* x, size_t row) {
  const double inv = 1.0 / checked_norm(x, dim_, row, "vector");
  unsigned char* dst = data_ + row * row_bytes_;
  std::memset(dst, 0, row_bytes_);
  switch (storage_) {
    case Storage::F32: {
      float* d = reinterpret_cast<float*>(dst);
      for (size_t j = 0; j < dim_; ++j) d[j] = static_cast<float>(x[j] * inv);
      break;
    }
    case Storage::F16: {
      uint16_t* d = reinterpret_cast<uint16_t*>(dst);
      for (size_t j = 0; j < dim_; ++j) d[j] = f32_to_f16(static_cast<float>(x[j] * inv));
      break;
    }
    case Storage::I8:
      scale_[row] = quantize_i8(x, inv, dim_, reinterpret_cast<int8_t*>(dst), &rsum_[row]);
      break;
  }
}

void ExactIndex::reserve_rows(size_t rows) {
  if (rows <= cap_rows_) return;
  if (rows > kMaxRows) throw std::length_error("the exact index holds at most 2^32 rows");
  size_t cap = std::max<size_t>({rows, cap_rows_ * 2, 1024});
  cap = std::min(cap, kMaxRows);
  const size_t bytes = cap * row_bytes_;
  auto* p = static_cast<unsigned char*>(std::aligned_alloc(kRowAlign, bytes));
  if (!p) throw std::bad_alloc();
  if (data_) std::memcpy(p, data_, nrows_ * row_bytes_);
  std::free(data_);
  data_ = p;
  cap_rows_ = cap;
  live_.resize((cap + 63) / 64, 0);
  if (storage_ == Storage::I8) {
    scale_.resize(cap);
    rsum_.resize(cap);
  }
}

int64_t ExactIndex::add(const float* x, size_t n) {
  validate_rows(x, n, "vector");  // before the lock and before any change
  std::unique_lock<std::shared_mutex> g(mu_);
  const size_t first = nrows_;
  if (n == 0) return static_cast<int64_t>(first);
  reserve_rows(nrows_ + n);
  for (size_t i = 0; i < n; ++i) {
    encode_row(x + i * dim_, first + i);
    live_[(first + i) >> 6] |= uint64_t{1} << ((first + i) & 63);
  }
  nrows_ += n;
  nlive_ += n;
  return static_cast<int64_t>(first);
}

void ExactIndex::check_ids(const int64_t* ids, size_t n, bool need_live) const {
  for (size_t i = 0; i < n; ++i) {
    const int64_t id = ids[i];
    if (id < 0 || static_cast<size_t>(id) >= nrows_)
      throw std::invalid_argument("id " + std::to_string(id) + " is out of range (index has " +
                                  std::to_string(nrows_) + " rows)");
    if (need_live && !live(static_cast<size_t>(id)))
      throw std::invalid_argument("id " + std::to_string(id) + " has been removed");
  }
}

void ExactIndex::set(const int64_t* ids, const float* x, size_t n) {
  validate_rows(x, n, "vector");
  std::unique_lock<std::shared_mutex> g(mu_);
  check_ids(ids, n, false);
  for (size_t i = 0; i < n; ++i) {
    const size_t r = static_cast<size_t>(ids[i]);
    encode_row(x + i * dim_, r);
    if (!live(r)) {
      live_[r >> 6] |= uint64_t{1} << (r & 63);
      ++nlive_;
    }
  }
}

size_t ExactIndex::remove(const int64_t* ids, size_t n) {
  std::unique_lock<std::shared_mutex> g(mu_);
  check_ids(ids, n, false);
  size_t removed = 0;
  for (size_t i = 0; i < n; ++i) {
    const size_t r = static_cast<size_t>(ids[i]);
    if (live(r)) {
      live_[r >> 6] &= ~(uint64_t{1} << (r & 63));
      ++removed;
    }
  }
  nlive_ -= removed;
  return removed;
}

namespace {
constexpr char kMagic[8] = {'S', 'K', 'L', 'X', 'A', 'C', 'T', '1'};

struct FileHeader {
  char magic[8];
  uint64_t dim, storage, row_bytes, nrows, nlive;
};

struct File {
  std::FILE* f;
  File(const std::string& path, const char* mode) : f(std::fopen(path.c_str(), mode)) {
    if (!f) throw std::runtime_error("cannot open " + path);
  }
  ~File() {
    if (f) std::fclose(f);
  }
  void write(const void* p, size_t n, const std::string& path) {
    if (n && std::fwrite(p, 1, n, f) != n) throw std::runtime_error("short write to " + path);
  }
  void read(void* p, size_t n, const std::string& path) {
    if (n && std::fread(p, 1, n, f) != n) throw std::runtime_error(path + " is truncated");
  }
  void close(const std::string& path) {
    const int rc = std::fclose(f);
    f = nullptr;
    if (rc != 0) throw std::runtime_error("cannot finish writing " + path);
  }
};
}  // namespace

void ExactIndex::save(const std::string& path) const {
  std::shared_lock<std::shared_mutex> g(mu_);
  FileHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.dim = dim_;
  h.storage = static_cast<uint64_t>(storage_);
  h.row_bytes = row_bytes_;
  h.nrows = nrows_;
  h.nlive = nlive_;
  File f(path, "wb");
  f.write(&h, sizeof h, path);
  f.write(data_, nrows_ * row_bytes_, path);
  f.write(live_.data(), (nrows_ + 63) / 64 * sizeof(uint64_t), path);
  if (storage_ == Storage::I8) {
    f.write(scale_.data(), nrows_ * sizeof(float), path);
    f.write(rsum_.data(), nrows_ * sizeof(int32_t), path);
  }
  f.close(path);
}

void ExactIndex::load(const std::string& path) {
  File f(path, "rb");
  FileHeader h{};
  f.read(&h, sizeof h, path);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) throw std::runtime_error(path + " is not an exact-index file");
  if (h.dim != dim_ || h.storage != static_cast<uint64_t>(storage_) || h.row_bytes != row_bytes_)
    throw std::runtime_error(path + " holds another dim or storage (" + std::to_string(h.dim) + ", " +
                             storage_name(static_cast<Storage>(h.storage)) + ")");
  if (h.nrows > kMaxRows || h.nlive > h.nrows) throw std::runtime_error(path + " has a damaged header");
  std::unique_lock<std::shared_mutex> g(mu_);
  nrows_ = nlive_ = 0;  // a failed load leaves an empty index, never a half-loaded one
  try {
    reserve_rows(h.nrows);
    std::fill(live_.begin(), live_.end(), 0);
    f.read(data_, h.nrows * row_bytes_, path);
    f.read(live_.data(), (h.nrows + 63) / 64 * sizeof(uint64_t), path);
    if (storage_ == Storage::I8) {
      f.read(scale_.data(), h.nrows * sizeof(float), path);
      f.read(rsum_.data(), h.nrows * sizeof(int32_t), path);
    }
    if (h.nrows % 64 && (live_[h.nrows / 64] >> (h.nrows % 64)) != 0)
      throw std::runtime_error(path + " is damaged (live bits past the last row)");
    size_t live_count = 0;
    for (size_t w = 0; w < (h.nrows + 63) / 64; ++w) live_count += static_cast<size_t>(__builtin_popcountll(live_[w]));
    if (live_count != h.nlive) throw std::runtime_error(path + " is damaged (live rows do not match its header)");
  } catch (...) {
    std::fill(live_.begin(), live_.end(), 0);
    throw;
  }
  nrows_ = h.nrows;
  nlive_ = h.nlive;
}

std::vector<int64_t> ExactIndex::compact() {
  std::unique_lock<std::shared_mutex> g(mu_);
  std::vector<int64_t> remap(nrows_, -1);
  size_t w = 0;
  for (size_t r = 0; r < nrows_; ++r) {
    if (!live(r)) continue;
    if (w != r) {
      std::memcpy(data_ + w * row_bytes_, data_ + r * row_bytes_, row_bytes_);
      if (storage_ == Storage::I8) {
        scale_[w] = scale_[r];
        rsum_[w] = rsum_[r];
      }
    }
    remap[r] = static_cast<int64_t>(w++);
  }
  std::fill(live_.begin(), live_.end(), 0);
  for (size_t r = 0; r < w; ++r) live_[r >> 6] |= uint64_t{1} << (r & 63);
  nrows_ = nlive_ = w;
  return remap;
}

ExactIndex::Prepared ExactIndex::prepare(const float* q, size_t nq) const {
  Prepared p;
  if (storage_ == Storage::I8) {
    p.c = aligned_array<int8_t>(nq * dpad_);
    p.scale.resize(nq);
    for (size_t i = 0; i < nq; ++i)
      p.scale[i] = quantize_i8(q + i * dim_, 1.0 / checked_norm(q + i * dim_, dim_, i, "query"),
                               dim_, p.c.get() + i * dpad_, nullptr);
  } else {
    p.f = aligned_array<float>(nq * dpad_);
    for (size_t i = 0; i < nq; ++i) {
      const double inv = 1.0 / checked_norm(q + i * dim_, dim_, i, "query");
      float* d = p.f.get() + i * dpad_;
      for (size_t j = 0; j < dim_; ++j) d[j] = static_cast<float>(q[i * dim_ + j] * inv);
    }
  }
  return p;
}

void ExactIndex::score(const Prepared& p, size_t q0, size_t nq, const uint32_t* ids, size_t row0,
                       size_t nrows, float* out, size_t ldo) const {
  switch (storage_) {
    case Storage::F32:
      kernels_->score_f32(p.f.get() + q0 * dpad_, nq, reinterpret_cast<const float*>(data_) + row0 * dpad_,
                          ids, nrows, dpad_, out, ldo);
      break;
    case Storage::F16:
      kernels_->score_f16(p.f.get() + q0 * dpad_, nq,
                          reinterpret_cast<const uint16_t*>(data_) + row0 * dpad_, ids, nrows, dpad_,
                          out, ldo);
      break;
    case Storage::I8:
      kernels_->score_i8(p.c.get() + q0 * dpad_, p.scale.data() + q0, nq,
                         reinterpret_cast<const int8_t*>(data_) + row0 * dpad_,
                         scale_.data() + row0, rsum_.data() + row0, ids, nrows, dpad_, out, ldo);
      break;
  }
}

SearchResult ExactIndex::search(const float* q, size_t nq, size_t k, const Allow* allow) const {
  if (k == 0) throw std::invalid_argument("k must be >= 1");
  const Prepared p = prepare(q, nq);  // validates queries; no lock needed
  std::shared_lock<std::shared_mutex> g(mu_);

  SearchResult res;
  res.nq = nq;
  res.k = std::min(k, nlive_);
  res.scores.assign(nq * res.k, -std::numeric_limits<float>::infinity());
  res.ids.assign(nq * res.k, -1);
  if (res.k == 0 || nq == 0) return res;
  const size_t kk = res.k;

  // Rows in blocks of a multiple of 64 so each block starts on a bitset word.
  const size_t block = std::clamp<size_t>(kBlockBytes / row_bytes_ / 64 * 64, 64, 1024);
  const size_t by_bytes = nrows_ * row_bytes_ / kMinChunkBytes;
  const size_t nchunks = std::max<size_t>(1, std::min(threads_, by_bytes));
  const size_t per = round_up((nrows_ + nchunks - 1) / nchunks, 64);

  std::vector<std::vector<TopK>> tops(nchunks);
  ThreadPool::global().run(nchunks, [&](size_t c) {
    const size_t lo = std::min(nrows_, c * per), hi = std::min(nrows_, lo + per);
    std::vector<TopK>& top = tops[c];
    top.reserve(nq);
    for (size_t i = 0; i < nq; ++i) top.emplace_back(kk);
    std::vector<float> out(std::min(nq, kQueryGroup) * block);
    std::vector<uint32_t> idx(block), gather(block);
    std::vector<uint64_t> cand(block / 64);

    for (size_t b0 = lo; b0 < hi; b0 += block) {
      const size_t nb = std::min(block, hi - b0);
      // Candidate rows: live and allowed.
      size_t count = 0;
      for (size_t w = 0; w < (nb + 63) / 64; ++w) {
        const size_t gw = (b0 >> 6) + w;
        uint64_t m = live_[gw];
        if (allow) m &= allow->word(gw);
        const size_t valid = std::min<size_t>(64, nb - w * 64);
        if (valid < 64) m &= (uint64_t{1} << valid) - 1;
        cand[w] = m;
        count += static_cast<size_t>(__builtin_popcountll(m));
      }
      if (count == 0) continue;
      // Sparse blocks (selective filters, many tombstones) score only their candidates.
      const bool sparse = count * 4 < nb;
      const bool full = count == nb;
      if (sparse) {
        size_t n = 0;
        for (size_t w = 0; w < (nb + 63) / 64; ++w)
          for (uint64_t m = cand[w]; m; m &= m - 1)
            gather[n++] = static_cast<uint32_t>(w * 64 + __builtin_ctzll(m));
      }
      const size_t ncols = sparse ? count : nb;
      for (size_t g0 = 0; g0 < nq; g0 += kQueryGroup) {
        const size_t gn = std::min(kQueryGroup, nq - g0);
        score(p, g0, gn, sparse ? gather.data() : nullptr, b0, ncols, out.data(), block);
        for (size_t qi = 0; qi < gn; ++qi) {
          TopK& t = top[g0 + qi];
          const float* s = out.data() + qi * block;
          const size_t m = kernels_->select_gt(s, ncols, t.threshold(), idx.data());
          for (size_t j = 0; j < m; ++j) {
            const size_t col = idx[j];
            const size_t local = sparse ? gather[col] : col;
            if (!sparse && !full && !((cand[local >> 6] >> (local & 63)) & 1u)) continue;
            // The threshold may have risen since select_gt ran.
            if (s[col] > t.threshold()) t.push(s[col], static_cast<int64_t>(b0 + local));
          }
        }
      }
    }
  });

  std::vector<Hit> all, best(kk);
  for (size_t qi = 0; qi < nq; ++qi) {
    all.clear();
    for (auto& top : tops) all.insert(all.end(), top[qi].raw().begin(), top[qi].raw().end());
    const size_t n = std::min(kk, all.size());
    std::partial_sort(all.begin(), all.begin() + n, all.end(), better);
    for (size_t j = 0; j < n; ++j) {
      res.scores[qi * kk + j] = all[j].score;
      res.ids[qi * kk + j] = all[j].id;
    }
  }
  return res;
}

void ExactIndex::rerank(const float* q, const int64_t* ids, size_t n, float* out) const {
  const Prepared p = prepare(q, 1);
  std::shared_lock<std::shared_mutex> g(mu_);
  check_ids(ids, n, true);
  std::vector<uint32_t> rows(n);
  for (size_t i = 0; i < n; ++i) rows[i] = static_cast<uint32_t>(ids[i]);
  if (n) score(p, 0, 1, rows.data(), 0, n, out, n);
}

void ExactIndex::reconstruct(const int64_t* ids, size_t n, float* out) const {
  std::shared_lock<std::shared_mutex> g(mu_);
  check_ids(ids, n, true);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char* src = data_ + static_cast<size_t>(ids[i]) * row_bytes_;
    float* d = out + i * dim_;
    for (size_t j = 0; j < dim_; ++j) {
      switch (storage_) {
        case Storage::F32: d[j] = reinterpret_cast<const float*>(src)[j]; break;
        case Storage::F16: d[j] = f16_to_f32(reinterpret_cast<const uint16_t*>(src)[j]); break;
        case Storage::I8:
          d[j] = scale_[ids[i]] * static_cast<float>(reinterpret_cast<const int8_t*>(src)[j]);
          break;
      }
    }
  }
}

uint64_t ExactIndex::stream_read() const {
  std::shared_lock<std::shared_mutex> g(mu_);
  const size_t bytes = nrows_ * row_bytes_;
  const size_t nchunks = std::max<size_t>(1, std::min(threads_, bytes / kMinChunkBytes));
  const size_t per = round_up((bytes + nchunks - 1) / nchunks, kRowAlign);
  std::vector<uint64_t> h(nchunks, 0);
  ThreadPool::global().run(nchunks, [&](size_t c) {
    const size_t lo = std::min(bytes, c * per), hi = std::min(bytes, lo + per);
    h[c] = kernels_->stream_read(data_ + lo, hi - lo);
  });
  uint64_t x = 0;
  for (uint64_t v : h) x ^= v;
  return x;
}

}  // namespace skulens
