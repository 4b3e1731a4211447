// pybind11 bindings: skulens._kernel. Arrays arrive already validated and
// contiguous (skulens/index.py); results leave without a copy, owned by numpy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <utility>
#include <vector>

#include "skulens/exact_index.h"
#include "skulens/fp16.h"
#include "skulens/hnsw_graph.h"

namespace py = pybind11;
using skulens::ExactIndex;
using skulens::HnswGraph;

namespace {

using F32Array = py::array_t<float, py::array::c_style>;
using I64Array = py::array_t<int64_t, py::array::c_style>;
using U64Array = py::array_t<uint64_t, py::array::c_style>;

template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v, std::vector<py::ssize_t> shape) {
  auto* owned = new std::vector<T>(std::move(v));
  py::capsule free(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(shape, owned->data(), free);
}

const float* rows_of(const F32Array& x, size_t dim, size_t* n) {
  if (x.ndim() != 2 || static_cast<size_t>(x.shape(1)) != dim)
    throw std::invalid_argument("expected an array of shape (n, " + std::to_string(dim) + ")");
  *n = static_cast<size_t>(x.shape(0));
  return x.data();
}

// (words, bits) from Python as the kernel's Allow; `keep` holds the array while it is used.
skulens::Allow to_allow(const py::object& allow, U64Array* keep) {
  if (allow.is_none()) return {};
  auto t = allow.cast<py::tuple>();
  if (t.size() != 2) throw std::invalid_argument("allow must be (words, bits)");
  *keep = t[0].cast<U64Array>();
  const size_t bits = t[1].cast<size_t>();
  if (bits > 64 * static_cast<size_t>(keep->size()))
    throw std::invalid_argument("allow covers more ids than its words hold");
  return {keep->data(), bits};
}

}  // namespace

PYBIND11_MODULE(_kernel, m) {
  m.doc() = "skulens exact top-k cosine kernel";
  m.def("best_simd", [] { return std::string(skulens::best_kernels().name); },
        "The SIMD path chosen for this CPU.");
  m.def("simd_paths", [] {
    std::vector<std::string> out;
    for (const char* n : skulens::kTableNames)
      if (skulens::kernels_by_name(n)) out.emplace_back(n);
    return out;
  }, "SIMD paths this CPU can run.");
  m.def("f16_round_trip", [](const F32Array& x) {
    std::vector<uint16_t> h(static_cast<size_t>(x.size()));
    std::vector<float> back(h.size());
    for (size_t i = 0; i < h.size(); ++i) {
      h[i] = skulens::f32_to_f16(x.data()[i]);
      back[i] = skulens::f16_to_f32(h[i]);
    }
    return py::make_tuple(to_numpy(std::move(h), {x.size()}), to_numpy(std::move(back), {x.size()}));
  }, "Encode to binary16 and back with the index's own conversion (for tests).");

  py::class_<ExactIndex>(m, "ExactIndex")
      .def(py::init([](size_t dim, const std::string& storage, size_t threads, py::object simd) {
             std::string s = simd.is_none() ? "" : simd.cast<std::string>();
             return new ExactIndex(dim, skulens::parse_storage(storage), threads,
                                   s.empty() ? nullptr : s.c_str());
           }),
           py::arg("dim"), py::arg("storage") = "fp32", py::arg("threads") = 0,
           py::arg("simd") = py::none())
      .def_property_readonly("dim", &ExactIndex::dim)
      .def_property_readonly("storage", [](const ExactIndex& i) { return skulens::storage_name(i.storage()); })
      .def_property_readonly("simd", &ExactIndex::simd)
      .def_property_readonly("row_bytes", &ExactIndex::row_bytes)
      .def_property("threads", &ExactIndex::threads, &ExactIndex::set_threads)
      .def_property_readonly("ntotal", &ExactIndex::ntotal)
      .def("__len__", &ExactIndex::size)
      .def("contains", &ExactIndex::contains)
      .def("add", [](ExactIndex& self, const F32Array& x) {
        size_t n;
        const float* p = rows_of(x, self.dim(), &n);
        py::gil_scoped_release nogil;
        return self.add(p, n);
      })
      .def("set", [](ExactIndex& self, const I64Array& ids, const F32Array& x) {
        size_t n;
        const float* p = rows_of(x, self.dim(), &n);
        if (static_cast<size_t>(ids.size()) != n) throw std::invalid_argument("ids and vectors differ in length");
        py::gil_scoped_release nogil;
        self.set(ids.data(), p, n);
      })
      .def("remove", [](ExactIndex& self, const I64Array& ids) {
        py::gil_scoped_release nogil;
        return self.remove(ids.data(), static_cast<size_t>(ids.size()));
      })
      .def("compact", [](ExactIndex& self) {
        std::vector<int64_t> remap;
        {
          py::gil_scoped_release nogil;
          remap = self.compact();
        }
        const auto n = static_cast<py::ssize_t>(remap.size());
        return to_numpy(std::move(remap), {n});
      })
      .def("search", [](const ExactIndex& self, const F32Array& q, size_t k, py::object allow) {
        size_t nq;
        const float* qp = rows_of(q, self.dim(), &nq);
        U64Array words;
        const skulens::Allow a = to_allow(allow, &words);
        skulens::SearchResult r;
        {
          py::gil_scoped_release nogil;
          r = self.search(qp, nq, k, allow.is_none() ? nullptr : &a);
        }
        const auto rows = static_cast<py::ssize_t>(r.nq), cols = static_cast<py::ssize_t>(r.k);
        return py::make_tuple(to_numpy(std::move(r.scores), {rows, cols}),
                              to_numpy(std::move(r.ids), {rows, cols}));
      }, py::arg("queries"), py::arg("k"), py::arg("allow") = py::none(),
      "Top k of each query: (scores[nq, k'], ids[nq, k']). allow: None, or (words, bits): a\n"
      "little-endian uint64 bitset over ids and how many ids it covers (skulens.index.Allow).")
      .def("rerank", [](const ExactIndex& self, const F32Array& q, const I64Array& ids) {
        if (static_cast<size_t>(q.size()) != self.dim())
          throw std::invalid_argument("query must have " + std::to_string(self.dim()) + " values");
        std::vector<float> out(static_cast<size_t>(ids.size()));
        {
          py::gil_scoped_release nogil;
          self.rerank(q.data(), ids.data(), out.size(), out.data());
        }
        const auto n = static_cast<py::ssize_t>(out.size());
        return to_numpy(std::move(out), {n});
      })
      .def("reconstruct", [](const ExactIndex& self, const I64Array& ids) {
        std::vector<float> out(static_cast<size_t>(ids.size()) * self.dim());
        {
          py::gil_scoped_release nogil;
          self.reconstruct(ids.data(), static_cast<size_t>(ids.size()), out.data());
        }
        return to_numpy(std::move(out), {ids.size(), static_cast<py::ssize_t>(self.dim())});
      })
      .def("save", [](const ExactIndex& self, const std::string& path) {
        py::gil_scoped_release nogil;
        self.save(path);
      })
      .def("load", [](ExactIndex& self, const std::string& path) {
        py::gil_scoped_release nogil;
        self.load(path);
      })
      .def("stream_read", [](const ExactIndex& self) {
        py::gil_scoped_release nogil;
        return self.stream_read();
      }, "Read every stored byte once with the index's threads (the benchmark's memory floor).");

  py::class_<HnswGraph>(m, "HnswGraph")
      .def(py::init<size_t, size_t, size_t, size_t, size_t>(), py::arg("dim"), py::arg("max_elements"),
           py::arg("M"), py::arg("ef_construction"), py::arg("seed") = 100)
      .def_static("load", [](size_t dim, const std::string& path, size_t max_elements) {
        py::gil_scoped_release nogil;
        return HnswGraph::load(dim, path, max_elements);
      }, py::arg("dim"), py::arg("path"), py::arg("max_elements"))
      .def_property_readonly("dim", &HnswGraph::dim)
      .def_property_readonly("count", &HnswGraph::count)
      .def_property_readonly("deleted", &HnswGraph::deleted)
      .def_property_readonly("capacity", &HnswGraph::capacity)
      .def_property_readonly("M", &HnswGraph::M)
      .def_property_readonly("ef_construction", &HnswGraph::ef_construction)
      .def("add", [](HnswGraph& self, const F32Array& x, const U64Array& labels, size_t threads) {
        size_t n;
        const float* p = rows_of(x, self.dim(), &n);
        if (static_cast<size_t>(labels.size()) != n) throw std::invalid_argument("labels and vectors differ in length");
        py::gil_scoped_release nogil;
        self.add(p, labels.data(), n, threads);
      }, py::arg("x"), py::arg("labels"), py::arg("threads") = 1)
      .def("mark_deleted", &HnswGraph::mark_deleted)
      .def("resize", [](HnswGraph& self, size_t n) {
        py::gil_scoped_release nogil;
        self.resize(n);
      })
      .def("save", [](const HnswGraph& self, const std::string& path) {
        py::gil_scoped_release nogil;
        self.save(path);
      })
      .def("search", [](const HnswGraph& self, const F32Array& q, size_t k, size_t ef, py::object allow,
                        py::object rerank) {
        if (static_cast<size_t>(q.size()) != self.dim())
          throw std::invalid_argument("query must have " + std::to_string(self.dim()) + " values");
        U64Array words;
        const skulens::Allow a = to_allow(allow, &words);
        const ExactIndex* exact = rerank.is_none() ? nullptr : &rerank.cast<const ExactIndex&>();
        std::vector<float> scores(k);
        std::vector<int64_t> labels(k);
        size_t n;
        {
          py::gil_scoped_release nogil;
          n = self.search(q.data(), k, ef, allow.is_none() ? nullptr : &a, scores.data(), labels.data(), exact);
        }
        scores.resize(n);
        labels.resize(n);
        const auto len = static_cast<py::ssize_t>(n);
        return py::make_tuple(to_numpy(std::move(scores), {len}), to_numpy(std::move(labels), {len}));
      }, py::arg("query"), py::arg("k"), py::arg("ef"), py::arg("allow") = py::none(),
      py::arg("rerank") = py::none(),
      "Top k by inner product: (scores, labels) best first, fewer when the graph or the filter\n"
      "(None, or (words, bits) as ExactIndex.search takes) yields fewer. rerank: an ExactIndex holding\n"
      "the same rows at the same ids, whose exact scores replace the walk's (ties: lower label first).");
}
