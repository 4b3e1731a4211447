// The padded row lengths (elements) the single-query streams are compiled for, in one place for
// every ISA file: with_dpad(dpad, f) calls f(std::integral_constant<size_t, DPAD>) and returns
// true, or returns false for a length with no specialisation (the generic tile serves it).
#pragma once
#include <cstddef>
#include <type_traits>

namespace skulens {

template <class F>
inline bool with_dpad(size_t dpad, F&& f) {
  switch (dpad) {
    case 64: f(std::integral_constant<size_t, 64>{}); return true;
    case 128: f(std::integral_constant<size_t, 128>{}); return true;
    case 192: f(std::integral_constant<size_t, 192>{}); return true;
    case 256: f(std::integral_constant<size_t, 256>{}); return true;
    case 384: f(std::integral_constant<size_t, 384>{}); return true;
    case 512: f(std::integral_constant<size_t, 512>{}); return true;
    default: return false;
  }
}

}  // namespace skulens
