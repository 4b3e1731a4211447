// The one filter type of both indexes: a little-endian bitset over ids
// (bit i of word i/64 = id i may be returned). Ids at or past `bits` are not
// allowed. A null Allow pointer means "every id".
#pragma once
#include <cstddef>
#include <cstdint>

namespace skulens {

struct Allow {
  const uint64_t* words = nullptr;
  size_t bits = 0;  // ids covered; words holds at least (bits + 63) / 64 words

  size_t nwords() const { return (bits + 63) / 64; }
  // Word w of the bitset (0 past the end), for scans that test 64 ids at once.
  uint64_t word(size_t w) const { return w < nwords() ? words[w] : 0; }
  bool test(uint64_t id) const { return id < bits && ((words[id >> 6] >> (id & 63)) & 1u); }
};

}  // namespace skulens
