// safetensors: a reader that validates the whole header before it allocates, and an atomic writer.
#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>

#include "cpp/io/atomic_file.h"
#include "cpp/io/json_limits.h"
#include "cpp/io/read_file.h"
#include "ember/error.h"
#include "ember/io.h"

// Tensor bytes go between memory and the file unconverted; the format is little-endian.
static_assert(std::endian::native == std::endian::little, "ember's safetensors I/O assumes a little-endian host");

namespace ember::io {

namespace {

using json = nlohmann::json;
using ember::detail::str_cat;

// The reference implementation's MAX_HEADER_SIZE: larger headers are refused before reading them.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeName {
  const char* name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {{"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
                                 {"I64", DType::I64}, {"I32", DType::I32}, {"U8", DType::U8},   {"BOOL", DType::Bool}};
constexpr const char* kSupportedList = "F64, F32, F16, BF16, I64, I32, U8, BOOL";
// dtypes the format defines but ember has no type for: named "unsupported", not "unknown".
constexpr const char* kUnsupported[] = {"I8",      "I16",     "U16", "U32",     "U64",     "F8_E5M2",
                                        "F8_E4M3", "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2", "C64"};

const char* safetensors_name(DType dt) {
  for (const DTypeName& d : kDTypes)
    if (d.dtype == dt) return d.name;
  throw Error(str_cat("save_safetensors: dtype ", dtype_name(dt), " has no safetensors name"));
}

// Offset of the first byte that does not start a well-formed UTF-8 sequence (no overlong forms,
// no surrogates, nothing above U+10FFFF), or npos when the whole text is valid.
size_t utf8_invalid_at(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp, min;
    if ((c >> 5) == 0x6) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c >> 4) == 0xE) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c >> 3) == 0x1E) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return i;
    }
    if (s.size() - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

using ember::detail::json_brief;
using ember::detail::quote_brief;

// ---- loading ----

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

class Loader {
 public:
  explicit Loader(std::string path) : path_(std::move(path)) {}

  SafetensorsFile load(Device device) {
    uint64_t file_size = 0;
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(
        detail::open_regular_file(path_, "load_safetensors: " + path_, "a safetensors file", file_size), &std::fclose);
    f_ = file.get();

    if (file_size < 8)
      fail("file is ", file_size, " bytes, too short for the 8-byte header length that starts a safetensors file");
    unsigned char prefix[8];
    read_exact(prefix, 8, 0);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | prefix[i];
    if (n > kMaxHeaderBytes) fail("header length ", n, " exceeds the limit of ", kMaxHeaderBytes, " bytes");
    if (n > file_size - 8)
      fail("header length ", n, " runs past the end of the file (", file_size, " bytes, room for at most ",
           file_size - 8, " header bytes)");
    std::string header(n, '\0');
    read_exact(header.data(), n, 8);
    const uint64_t data_size = file_size - 8 - n;

    SafetensorsFile out;
    std::vector<Entry> entries = parse_header(header, data_size, out.metadata);
    check_tiling(entries, data_size);

    // Only now, with every size proven to match the file, does anything get allocated. The
    // ranges tile the data buffer in this order, so the reads are sequential.
    uint64_t pos = 8 + n;
    for (const Entry& e : entries) {
      Tensor t = empty(e.shape, e.dtype);
      read_exact(t.data_ptr(), e.end - e.begin, pos);
      pos += e.end - e.begin;
      // A C++ bool must hold 0 or 1; other bytes read as true, as NumPy and PyTorch treat them.
      if (e.dtype == DType::Bool) {
        auto* p = static_cast<unsigned char*>(t.data_ptr());
        for (uint64_t i = 0; i < e.end - e.begin; ++i) p[i] = p[i] != 0;
      }
      if (device != Device::cpu()) t = t.to(device);  // one tensor at a time: host memory stays small
      out.tensors.emplace_back(e.name, std::move(t));
    }
    std::sort(out.tensors.begin(), out.tensors.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    return out;
  }

 private:
  template <class... Args> [[noreturn]] void fail(const Args&... args) const {
    throw Error(str_cat("load_safetensors: ", path_, ": ", args...));
  }

  void read_exact(void* dst, uint64_t n, uint64_t at) const {
    if (n == 0) return;
    errno = 0;
    const size_t got = std::fread(dst, 1, n, f_);
    if (got == n) return;
    if (std::feof(f_))
      fail("file ended at byte ", at + got, " while reading ", n, " bytes from byte ", at,
           " (was it truncated while loading?)");
    fail("read of ", n, " bytes at byte ", at, " failed: ", errno ? std::strerror(errno) : "stream error");
  }

  // A non-negative JSON integer, or a failure naming `what` and the value.
  uint64_t non_negative(const json& v, const std::string& what) const {
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_number_integer()) {
      const auto x = v.get<int64_t>();
      if (x < 0) fail(what, " is ", x, "; it must be a non-negative integer");
      return static_cast<uint64_t>(x);
    }
    fail(what, " must be a non-negative integer, got ", v.type_name(), " ", json_brief(v));
  }

  json parse_json(const std::string& header) const {
    if (const size_t bad = utf8_invalid_at(header); bad != std::string_view::npos) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned char>(header[bad]));
      fail("header is not valid UTF-8 (byte ", hex, " at header offset ", bad, ")");
    }

    // nlohmann keeps the last of duplicate keys silently, so the parser callback tracks the keys
    // of every open object. Nesting is capped at the 3 levels a valid header uses (header object,
    // tensor entry, shape array), which bounds what a hostile header can build.
    struct Frame {
      std::set<std::string> keys;
      std::string last_key;
    };
    std::vector<Frame> frames;
    auto callback = [&](int, json::parse_event_t event, json& parsed) -> bool {
      switch (event) {
        case json::parse_event_t::object_start:
        case json::parse_event_t::array_start:
          frames.emplace_back();
          break;
        case json::parse_event_t::object_end:
        case json::parse_event_t::array_end:
          frames.pop_back();
          break;
        case json::parse_event_t::key: {
          const auto& key = parsed.get_ref<const std::string&>();
          Frame& top = frames.back();
          if (!top.keys.insert(key).second) {
            if (frames.size() == 1 && key == "__metadata__") fail("header has more than one __metadata__ object");
            if (frames.size() == 1) fail("duplicate tensor name ", quote_brief(key), " in the header");
            fail("duplicate key ", quote_brief(key), " in header entry ", quote_brief(frames.front().last_key));
          }
          top.last_key = key;
          break;
        }
        case json::parse_event_t::value:
          break;
      }
      return true;
    };
    const ember::detail::JsonLimits limits{
        .max_bytes = kMaxHeaderBytes,
        .max_depth = 3,
        .depth_hint = " (a safetensors header has 3: header, tensor entry, shape)"};
    return ember::detail::parse_json_limited(header, limits, str_cat("load_safetensors: ", path_, ": header"),
                                             callback);
  }

  std::vector<Entry> parse_header(const std::string& header, uint64_t data_size,
                                  std::map<std::string, std::string>& metadata) const {
    const json doc = parse_json(header);
    if (!doc.is_object()) fail("header must be a JSON object, got ", doc.type_name(), " ", json_brief(doc));

    std::vector<Entry> entries;
    for (const auto& [name, v] : doc.items()) {
      if (name == "__metadata__") {
        if (!v.is_object()) fail("__metadata__ must be an object of string values, got ", v.type_name());
        for (const auto& [k, value] : v.items()) {
          if (!value.is_string())
            fail("__metadata__ value for key ", quote_brief(k), " must be a string, got ", value.type_name(), " ", json_brief(value));
          metadata[k] = value.get<std::string>();
        }
        continue;
      }
      entries.push_back(parse_entry(name, v, data_size));
    }
    return entries;
  }

  Entry parse_entry(const std::string& name, const json& v, uint64_t data_size) const {
    const std::string who = "tensor " + quote_brief(name);
    if (!v.is_object())
      fail(who, " must be an object with dtype, shape and data_offsets, got ", v.type_name(), " ", json_brief(v));
    for (const auto& [k, unused] : v.items())
      if (k != "dtype" && k != "shape" && k != "data_offsets")
        fail(who, " has unexpected key ", quote_brief(k), " (an entry holds exactly dtype, shape and data_offsets)");
    for (const char* k : {"dtype", "shape", "data_offsets"})
      if (!v.contains(k)) fail(who, " is missing '", k, "'");

    Entry e;
    e.name = name;
    const json& dt = v["dtype"];
    if (!dt.is_string()) fail(who, " dtype must be a string, got ", dt.type_name(), " ", json_brief(dt));
    const auto& dts = dt.get_ref<const std::string&>();
    const DTypeName* known =
        std::find_if(std::begin(kDTypes), std::end(kDTypes), [&](const DTypeName& d) { return dts == d.name; });
    if (known == std::end(kDTypes)) {
      const bool defined =
          std::any_of(std::begin(kUnsupported), std::end(kUnsupported), [&](const char* u) { return dts == u; });
      fail(who, " has ", defined ? "unsupported" : "unknown", " dtype ", quote_brief(dts), " (ember reads ", kSupportedList, ")");
    }
    e.dtype = known->dtype;

    const json& shape = v["shape"];
    if (!shape.is_array()) fail(who, " shape must be an array of integers, got ", shape.type_name(), " ", json_brief(shape));
    uint64_t numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < shape.size(); ++i) {
      const uint64_t d = non_negative(shape[i], str_cat(who, " shape[", i, "]"));
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail(who, " shape[", i, "] is ", d, ", larger than a 64-bit signed extent");
      e.shape.push_back(static_cast<int64_t>(d));
      overflow |= __builtin_mul_overflow(numel, d, &numel);
    }
    uint64_t nbytes = 0;
    if (overflow || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(who, " shape ", shape_str(e.shape), " has more elements than fit in 64 bits");
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(e.dtype)), &nbytes))
      fail(who, " shape ", shape_str(e.shape), " of ", dts, " has a byte size that does not fit in 64 bits");

    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2)
      fail(who, " data_offsets must be an array [begin, end], got ", off.type_name(), " ", json_brief(off));
    e.begin = non_negative(off[0], who + " data_offsets[0]");
    e.end = non_negative(off[1], who + " data_offsets[1]");
    const std::string range = str_cat("data_offsets [", e.begin, ", ", e.end, "]");
    if (e.begin > e.end) fail(who, " ", range, ": begin is after end");
    if (e.end > data_size)
      fail(who, " ", range, " run past the end of the data buffer (", data_size, " bytes after the header)");
    if (e.end - e.begin != nbytes)
      fail(who, " ", range, " hold ", e.end - e.begin, " bytes but ", dts, " ", shape_str(e.shape), " needs ", nbytes);
    return e;
  }

  // The byte ranges, in file order, must cover the data buffer exactly: from 0, no overlap, no
  // gap, ending at its last byte. Sorts `entries` into that order.
  void check_tiling(std::vector<Entry>& entries, uint64_t data_size) const {
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    uint64_t covered = 0;
    const Entry* prev = nullptr;
    for (const Entry& e : entries) {
      if (e.begin < covered)
        fail("tensor ", quote_brief(e.name), " data_offsets [", e.begin, ", ", e.end, "] overlap tensor ",
             quote_brief(prev->name), " data_offsets [", prev->begin, ", ", prev->end, "]");
      if (e.begin > covered)
        fail("gap in the data buffer: bytes [", covered, ", ", e.begin, ") belong to no tensor (next is tensor ",
             quote_brief(e.name), " at data_offsets [", e.begin, ", ", e.end, "])");
      covered = e.end;
      prev = &e;
    }
    if (covered != data_size)
      fail("data buffer has ", data_size - covered, " trailing bytes that belong to no tensor (tensors end at byte ",
           covered, " of ", data_size, ")");
  }

  std::string path_;
  std::FILE* f_ = nullptr;
};

// Contiguous host bytes of `t` in row-major order, for any dtype: a strided gather by element
// size, since the CPU backend's copy does not cover every dtype (bf16, f16).
std::vector<char> gather_bytes(const Tensor& t) {
  const size_t es = dtype_size(t.dtype());
  const int64_t numel = t.numel();
  std::vector<char> out(static_cast<size_t>(numel) * es);
  const char* base = static_cast<const char*>(t.data_ptr());
  const Shape& shape = t.shape();
  const Shape& strides = t.strides();
  Shape idx(shape.size(), 0);
  for (int64_t k = 0; k < numel; ++k) {
    int64_t off = 0;
    for (size_t d = 0; d < shape.size(); ++d) off += idx[d] * strides[d];
    std::memcpy(out.data() + static_cast<size_t>(k) * es, base + off * static_cast<int64_t>(es), es);
    for (size_t d = shape.size(); d-- > 0;) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

}  // namespace

SafetensorsFile load_safetensors(const std::string& path, Device device) { return Loader(path).load(device); }

std::map<std::string, Tensor> load_safetensors_map(const std::string& path, Device device) {
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : load_safetensors(path, device).tensors) out.emplace(name, std::move(t));
  return out;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  auto check_text = [&](const std::string& s, const char* what) {
    if (const size_t bad = utf8_invalid_at(s); bad != std::string_view::npos)
      throw Error(str_cat("save_safetensors: ", path, ": ", what, " is not valid UTF-8 (byte ", bad,
                          "); safetensors headers are UTF-8 JSON"));
  };
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    EMBER_CHECK(!name.empty(), "save_safetensors: ", path, ": tensor #", i, " has an empty name");
    EMBER_CHECK(name != "__metadata__", "save_safetensors: ", path,
                ": '__metadata__' is reserved for the metadata object and cannot name a tensor");
    check_text(name, str_cat("tensor name #", i).c_str());
    EMBER_CHECK(t.defined(), "save_safetensors: ", path, ": tensor '", name, "' is undefined");
  }
  for (const auto& [k, v] : metadata) {
    check_text(k, "a metadata key");
    check_text(v, str_cat("metadata value of '", k, "'").c_str());
  }

  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return tensors[a].first < tensors[b].first; });
  for (size_t i = 1; i < order.size(); ++i)
    EMBER_CHECK(tensors[order[i]].first != tensors[order[i - 1]].first, "save_safetensors: ", path,
                ": duplicate tensor name '", tensors[order[i]].first, "'");

  // ordered_json keeps the reference writer's key order: __metadata__ first, then entries with
  // dtype, shape, data_offsets.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i : order) {
    const Tensor& t = tensors[i].second;
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype());
    header[tensors[i].first] = {{"dtype", safetensors_name(t.dtype())},
                                {"shape", t.shape()},
                                {"data_offsets", nlohmann::ordered_json::array({offset, offset + nbytes})}};
    offset += nbytes;
  }
  std::string text = header.dump();
  // Padded with spaces to a multiple of 8, as the reference writer does, so the data buffer
  // starts 8-byte aligned for readers that map the file.
  text.append((8 - text.size() % 8) % 8, ' ');

  detail::write_file_atomic(
      path,
      [&](std::FILE* f) {
        unsigned char prefix[8];
        for (int i = 0; i < 8; ++i)
          prefix[i] = static_cast<unsigned char>(static_cast<uint64_t>(text.size()) >> (8 * i));
        write_bytes(f, prefix, 8);
        write_bytes(f, text.data(), text.size());
        // One tensor at a time on the host, so saving device tensors never doubles host memory.
        for (size_t i : order) {
          Tensor host = tensors[i].second.detach();
          if (!host.device().is_cpu()) host = host.to(Device::cpu());  // arrives contiguous
          const size_t nbytes = static_cast<size_t>(host.numel()) * dtype_size(host.dtype());
          if (host.is_contiguous()) {
            write_bytes(f, host.data_ptr(), nbytes);
          } else {
            const std::vector<char> bytes = gather_bytes(host);
            write_bytes(f, bytes.data(), bytes.size());
          }
        }
      },
      "save_safetensors");
}

}  // namespace ember::io
