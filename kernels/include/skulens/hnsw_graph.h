// HNSW graph over unit vectors: hnswlib's HierarchicalNSW (vendored, 0.6.2)
// builds and keeps it; the search is our own walk of it, so a query runs in
// one call (GIL released) with its own ef and a bitset filter tested inline.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "skulens/allow.h"

namespace skulens {

class ExactIndex;

class HnswGraph {
 public:
  // An empty graph with room for max_elements (grown with resize).
  HnswGraph(size_t dim, size_t max_elements, size_t M, size_t ef_construction, size_t seed = 100);
  // A graph saved by save(); room for at least max_elements.
  static std::unique_ptr<HnswGraph> load(size_t dim, const std::string& path, size_t max_elements);
  ~HnswGraph();
  HnswGraph(const HnswGraph&) = delete;
  HnswGraph& operator=(const HnswGraph&) = delete;

  // Writes: the caller keeps searches out meanwhile (hnswlib is not safe
  // when its links change under a walk).
  // Inserts rows x[n][dim] at labels; a label already present is updated in
  // place (and undeleted). threads > 1 inserts in parallel.
  void add(const float* x, const uint64_t* labels, size_t n, size_t threads);
  void mark_deleted(uint64_t label);  // throws std::out_of_range if absent
  void resize(size_t max_elements);
  void save(const std::string& path) const;

  size_t dim() const;
  size_t count() const;     // elements ever inserted (deleted ones included)
  size_t deleted() const;   // elements marked deleted
  size_t capacity() const;
  size_t M() const;
  size_t ef_construction() const;

  // Top k by inner product with the unit query q: scores best first into
  // scores[], labels into labels[]; returns how many (< k when the graph or
  // the filter yields fewer). allow: the labels that may be returned; nullptr
  // lets every label through. Deleted elements are walked through but never
  // returned. rerank: an ExactIndex holding the same rows at the same ids,
  // whose exact scores replace the walk's, re-ordered best first (ties: lower
  // label first). Safe concurrently with other searches.
  size_t search(const float* q, size_t k, size_t ef, const Allow* allow, float* scores, int64_t* labels,
                const ExactIndex* rerank = nullptr) const;

 private:
  HnswGraph();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace skulens
