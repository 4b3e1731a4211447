// HnswGraph: hnswlib builds and keeps the graph; the search below walks it.
// The walk is hnswlib's (greedy descent through the upper layers, then a
// best-first beam of width ef on layer 0, as searchBaseLayerST in hnswlib
// 0.8), with ef a parameter instead of a shared setting and the filter a
// bitset tested inline instead of a callback.
#include "skulens/hnsw_graph.h"

#include <algorithm>
#include <atomic>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "../third_party/hnswlib/hnswlib.h"
#include "skulens/exact_index.h"
#include "skulens/simd.h"
#include "skulens/thread_pool.h"

namespace skulens {
namespace {

using Graph = hnswlib::HierarchicalNSW<float>;
using hnswlib::tableint;

// How many neighbours ahead of the distance being computed the walk fetches a vector whole.
#ifndef SKULENS_HNSW_AHEAD
#define SKULENS_HNSW_AHEAD 4
#endif
constexpr size_t kAhead = SKULENS_HNSW_AHEAD;

// Inner-product space with skulens' dispatched dot product. The distance is
// -<a, b>: hnswlib orders by it exactly as by its own 1 - <a, b>, and the
// score is its negation with no rounding in between.
class IpSpace : public hnswlib::SpaceInterface<float> {
 public:
  explicit IpSpace(size_t dim) : p_{dim, best_kernels().dot_f32} {}
  size_t get_data_size() override { return p_.dim * sizeof(float); }
  hnswlib::DISTFUNC<float> get_dist_func() override { return &distance; }
  void* get_dist_func_param() override { return &p_; }
  float (*dot() const)(const float*, const float*, size_t) { return p_.dot; }

 private:
  struct Param {
    size_t dim;
    float (*dot)(const float*, const float*, size_t);
  };
  static float distance(const void* a, const void* b, const void* param) {
    const auto* p = static_cast<const Param*>(param);
    return -p->dot(static_cast<const float*>(a), static_cast<const float*>(b), p->dim);
  }
  Param p_;
};

// The kernel's exact scores for the walk's top n, best first (ties by label),
// so auto mode returns the scores exact mode would (bit-identical across routes).
void rescore(const ExactIndex& exact, const float* q, size_t n, float* scores, int64_t* labels) {
  exact.rerank(q, labels, n, scores);
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return scores[a] != scores[b] ? scores[a] > scores[b] : labels[a] < labels[b];
  });
  std::vector<float> s2(n);
  std::vector<int64_t> l2(n);
  for (size_t i = 0; i < n; ++i) {
    s2[i] = scores[order[i]];
    l2[i] = labels[order[i]];
  }
  std::copy(s2.begin(), s2.end(), scores);
  std::copy(l2.begin(), l2.end(), labels);
}

using P = std::pair<float, tableint>;

// The walk's heaps and neighbour list come from a small pool (as hnswlib's visited lists do):
// once as many walks as run at once have run, a walk allocates nothing. A walk that grew them
// past kKeep entries (a huge ef, a filter that made the walk exhaustive) gives that memory back.
struct Buffers {
  static constexpr size_t kKeep = size_t{1} << 16;
  std::vector<P> top, cand;
  std::vector<tableint> todo;
};

class BufferPool {
 public:
  std::unique_ptr<Buffers> get() {
    std::lock_guard<std::mutex> g(mu_);
    if (free_.empty()) return std::make_unique<Buffers>();
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void put(std::unique_ptr<Buffers> b) {
    b->top.clear();
    b->cand.clear();
    for (auto* v : {&b->top, &b->cand})
      if (v->capacity() > Buffers::kKeep) std::vector<P>().swap(*v);
    std::lock_guard<std::mutex> g(mu_);
    free_.push_back(std::move(b));
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<Buffers>> free_;
};

// std::priority_queue's max-heap by .first (the same push_heap/pop_heap, so the same order as
// hnswlib's queues) over a borrowed vector.
struct Heap {
  std::vector<P>& v;
  bool empty() const { return v.empty(); }
  size_t size() const { return v.size(); }
  const P& top() const { return v.front(); }
  void emplace(float d, tableint id) {
    v.emplace_back(d, id);
    std::push_heap(v.begin(), v.end(), Graph::CompareByFirst());
  }
  void pop() {
    std::pop_heap(v.begin(), v.end(), Graph::CompareByFirst());
    v.pop_back();
  }
};

}  // namespace

struct HnswGraph::Impl {
  explicit Impl(size_t d) : dim(d), space(d) {}
  size_t dim;
  IpSpace space;
  mutable BufferPool buffers;
  std::unique_ptr<Graph> g;
};

HnswGraph::HnswGraph() = default;
HnswGraph::~HnswGraph() = default;

HnswGraph::HnswGraph(size_t dim, size_t max_elements, size_t M, size_t ef_construction, size_t seed)
    : impl_(std::make_unique<Impl>(dim)) {
  if (dim == 0) throw std::invalid_argument("dim must be >= 1");
  if (M < 2 || M > 10000) throw std::invalid_argument("M must be in 2..10000");
  impl_->g = std::make_unique<Graph>(&impl_->space, std::max<size_t>(max_elements, 1), M, ef_construction, seed);
}

std::unique_ptr<HnswGraph> HnswGraph::load(size_t dim, const std::string& path, size_t max_elements) {
  std::unique_ptr<HnswGraph> h(new HnswGraph());
  h->impl_ = std::make_unique<Impl>(dim);
  h->impl_->g = std::make_unique<Graph>(&h->impl_->space);
  Graph& g = *h->impl_->g;
  g.num_deleted_ = 0;  // hnswlib 0.6.2's loadIndex counts deletions into it but never zeroes it
  g.loadIndex(path, &h->impl_->space, max_elements);
  if (g.label_offset_ - g.offsetData_ != dim * sizeof(float))
    throw std::runtime_error(path + " holds vectors of dimension " +
                             std::to_string((g.label_offset_ - g.offsetData_) / sizeof(float)) + ", not " +
                             std::to_string(dim));
  return h;
}

void HnswGraph::add(const float* x, const uint64_t* labels, size_t n, size_t threads) {
  Graph& g = *impl_->g;
  const size_t d = impl_->dim;
  if (threads <= 1 || n < 2) {
    for (size_t i = 0; i < n; ++i) g.addPoint(x + i * d, labels[i]);
    return;
  }
  // hnswlib inserts concurrently (per-element locks); hand out rows one by one.
  std::atomic<size_t> next{0};
  ThreadPool::global().run(std::min(threads, n), [&](size_t) {
    for (size_t i; (i = next.fetch_add(1)) < n;) g.addPoint(x + i * d, labels[i]);
  });
}

void HnswGraph::mark_deleted(uint64_t label) {
  Graph& g = *impl_->g;
  if (g.label_lookup_.find(label) == g.label_lookup_.end())
    throw std::out_of_range("label " + std::to_string(label) + " is not in the graph");
  g.markDelete(label);
}

void HnswGraph::resize(size_t max_elements) { impl_->g->resizeIndex(max_elements); }
void HnswGraph::save(const std::string& path) const { impl_->g->saveIndex(path); }
size_t HnswGraph::dim() const { return impl_->dim; }
size_t HnswGraph::count() const { return impl_->g->cur_element_count; }
size_t HnswGraph::deleted() const { return impl_->g->num_deleted_; }
size_t HnswGraph::capacity() const { return impl_->g->max_elements_; }
size_t HnswGraph::M() const { return impl_->g->M_; }
size_t HnswGraph::ef_construction() const { return impl_->g->ef_construction_; }

size_t HnswGraph::search(const float* q, size_t k, size_t ef, const Allow* allow, float* scores,
                         int64_t* labels, const ExactIndex* rerank) const {
  const Graph& g = *impl_->g;
  if (k == 0 || g.cur_element_count == 0) return 0;
  ef = std::max(ef, k);
  // The space's distance, called directly (one indirect call, not two).
  const auto dot = impl_->space.dot();
  const size_t d = impl_->dim;
  const auto dist = [&](tableint id) {
    return -dot(q, reinterpret_cast<const float*>(g.getDataByInternalId(id)), d);
  };
  const bool deletions = g.num_deleted_ > 0;
  const auto wanted = [&](tableint id) {
    if (deletions && g.isMarkedDeleted(id)) return false;
    if (!allow) return true;
    return allow->test(g.getExternalLabel(id));
  };

  // Upper layers: greedy descent to the closest node.
  tableint cur = g.enterpoint_node_;
  float curd = dist(cur);
  for (int level = g.maxlevel_; level > 0; --level) {
    for (bool changed = true; changed;) {
      changed = false;
      const unsigned* ll = g.get_linklist(cur, level);
      const int size = g.getListCount(const_cast<unsigned*>(ll));
      const tableint* nb = reinterpret_cast<const tableint*>(ll + 1);
      for (int i = 0; i < size; ++i) {
        const float d = dist(nb[i]);
        if (d < curd) {
          curd = d;
          cur = nb[i];
          changed = true;
        }
      }
    }
  }

  // Layer 0: best-first beam. `top` keeps the ef best wanted nodes (max-heap
  // by distance); `cand` the frontier (min-heap via negated distance).
  std::unique_ptr<Buffers> held = impl_->buffers.get();
  Buffers& buf = *held;
  Heap top{buf.top}, cand{buf.cand};
  hnswlib::VisitedList* vl = g.visited_list_pool_->getFreeVisitedList();
  hnswlib::vl_type* visited = vl->mass;
  const hnswlib::vl_type tag = vl->curV;
  float bound = std::numeric_limits<float>::max();
  if (wanted(cur)) {
    bound = curd;
    top.emplace(curd, cur);
  }
  cand.emplace(-curd, cur);
  visited[cur] = tag;
  const bool exhaustive = deletions || allow;  // unwanted nodes must not end the walk early
  const size_t lines = (d * sizeof(float) + 63) / 64;
  const auto prefetch_vector = [&](tableint id) {
    const char* p = g.getDataByInternalId(id);
    for (size_t l = 0; l < lines; ++l) __builtin_prefetch(p + 64 * l);
  };
  std::vector<tableint>& todo = buf.todo;
  todo.resize(g.maxM0_ + 1);
  while (!cand.empty()) {
    const P c = cand.top();
    if (-c.first > bound && (top.size() == ef || !exhaustive)) break;
    cand.pop();
    const unsigned* ll = g.get_linklist0(c.second);
    const size_t size = g.getListCount(const_cast<unsigned*>(ll));
    const tableint* nb = reinterpret_cast<const tableint*>(ll + 1);
    // The unvisited neighbours first (the visited marks sit in one small array), then their
    // distances with each vector fetched whole a few neighbours ahead: a walk that runs after
    // the server slept finds the graph cold, and one line per vector leaves the other
    // 4 x dim / 64 lines to demand misses.
    for (size_t j = 0; j < size; ++j) __builtin_prefetch(visited + nb[j]);
    size_t fresh = 0;
    for (size_t j = 0; j < size; ++j) {
      const tableint id = nb[j];
      if (visited[id] == tag) continue;
      visited[id] = tag;
      todo[fresh++] = id;
    }
    for (size_t j = 0; j < fresh && j < kAhead; ++j) prefetch_vector(todo[j]);
    for (size_t j = 0; j < fresh; ++j) {
      const tableint id = todo[j];
      if (j + kAhead < fresh) prefetch_vector(todo[j + kAhead]);
      const float dd = dist(id);
      if (top.size() < ef || dd < bound) {
        cand.emplace(-dd, id);
        // The best candidate is likely the next one expanded: fetch its links.
        __builtin_prefetch(g.get_linklist0(cand.top().second));
        if (wanted(id)) {
          top.emplace(dd, id);
          if (top.size() > ef) top.pop();
        }
        if (!top.empty()) bound = top.top().first;
      }
    }
  }
  g.visited_list_pool_->releaseVisitedList(vl);

  while (top.size() > k) top.pop();
  const size_t n = top.size();
  for (size_t i = n; i-- > 0; top.pop()) {
    scores[i] = -top.top().first;
    labels[i] = static_cast<int64_t>(g.getExternalLabel(top.top().second));
  }
  impl_->buffers.put(std::move(held));
  if (rerank && n) rescore(*rerank, q, n, scores, labels);
  return n;
}

}  // namespace skulens
