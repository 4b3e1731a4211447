// Bounded top-k collector with a deterministic order: higher score first,
// then lower id. Candidates are appended to a reservoir of 2k and cut back to
// k with nth_element when it fills (cheaper than a heap when most candidates
// are rejected by the threshold, which is the common case in a scan).
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace skulens {

struct Hit {
  float score;
  int64_t id;
};

inline bool better(const Hit& a, const Hit& b) {
  return a.score > b.score || (a.score == b.score && a.id < b.id);
}

class TopK {
 public:
  explicit TopK(size_t k = 0) { reset(k); }

  void reset(size_t k) {
    k_ = k;
    buf_.clear();
    buf_.reserve(2 * k + 1);
    thr_ = -std::numeric_limits<float>::infinity();
  }

  // Scores <= threshold() can never enter: within one ascending scan a tie
  // with the k-th best always has a higher id, so strict > is exact.
  float threshold() const { return thr_; }

  void push(float score, int64_t id) {
    buf_.push_back({score, id});
    if (buf_.size() >= 2 * k_) shrink();
  }

  // Moves the best min(k, n) hits, sorted, into out; returns how many.
  size_t finish(Hit* out) {
    const size_t n = std::min(k_, buf_.size());
    std::partial_sort(buf_.begin(), buf_.begin() + n, buf_.end(), better);
    std::copy(buf_.begin(), buf_.begin() + n, out);
    return n;
  }

  const std::vector<Hit>& raw() const { return buf_; }

 private:
  void shrink() {
    std::nth_element(buf_.begin(), buf_.begin() + (k_ - 1), buf_.end(), better);
    thr_ = buf_[k_ - 1].score;
    buf_.resize(k_);
  }

  size_t k_ = 0;
  float thr_;
  std::vector<Hit> buf_;
};

}  // namespace skulens
