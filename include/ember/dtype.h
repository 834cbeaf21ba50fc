// DType: element types, their sizes and names, and the C++ type <-> DType mapping.
#pragma once
#include <cstddef>
#include <cstdint>
#include <ostream>

#include "ember/export.h"

namespace ember {

enum class DType : int8_t { F32, F64, BF16, F16, I64, I32, U8, Bool };

EMBER_API size_t dtype_size(DType dt);
EMBER_API const char* dtype_name(DType dt);
EMBER_API std::ostream& operator<<(std::ostream& os, DType dt);
inline bool is_floating(DType dt) {
  return dt == DType::F32 || dt == DType::F64 || dt == DType::BF16 || dt == DType::F16;
}
inline bool is_integral(DType dt) { return dt == DType::I64 || dt == DType::I32 || dt == DType::U8; }

template <class T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::F32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::F64; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::I64; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::I32; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::U8; };
template <> struct DTypeOf<bool> { static constexpr DType value = DType::Bool; };
template <class T> inline constexpr DType dtype_of = DTypeOf<T>::value;

}  // namespace ember
