// load_pth / save_pth: torch.save archives (zip + data.pkl + one entry per storage) to and from
// ember tensors, with every size checked against the file before anything is allocated.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <memory>
#include <unordered_set>

#include <zlib.h>

#include "cpp/core/text_brief.h"
#include "cpp/io/atomic_file.h"
#include "cpp/io/pth_unpickle.h"
#include "cpp/io/pth_zip.h"
#include "cpp/io/read_file.h"
#include "ember/error.h"
#include "ember/io.h"
#include "ember/pth.h"

static_assert(std::endian::native == std::endian::little, "ember's .pth I/O assumes a little-endian host");

namespace ember::io {

namespace {

using ember::detail::cut_brief;
using ember::detail::str_cat;

// Loaded tensors together may hold at most this many times the file's bytes: several views of
// one storage are legitimate (tied weights), thousands of them are an amplification attack.
constexpr uint64_t kMaxAmplification = 4;

float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal half: normalize
    int e = -1;
    uint32_t m = man;
    do {
      ++e;
      m <<= 1;
    } while ((m & 0x400) == 0);
    bits = sign | static_cast<uint32_t>(112 - e) << 23 | ((m & 0x3ff) << 13);
  }
  return std::bit_cast<float>(bits);
}

Tensor to_f32(const Tensor& t) {
  Tensor out = empty(t.shape(), TensorOptions(DType::F32));
  const auto* src = static_cast<const uint16_t*>(t.data_ptr());
  auto* dst = static_cast<float*>(out.data_ptr());
  const int64_t n = t.numel();
  if (t.dtype() == DType::BF16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = std::bit_cast<float>(static_cast<uint32_t>(src[i]) << 16);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(src[i]);
  }
  return out;
}

// Checked a * b and a + b for the geometry of a hostile file.
bool mul_ok(uint64_t a, uint64_t b, uint64_t& out) { return !__builtin_mul_overflow(a, b, &out); }
bool add_ok(uint64_t a, uint64_t b, uint64_t& out) { return !__builtin_add_overflow(a, b, &out); }

template <class... Args> [[noreturn]] void fail_with(const std::string& who, const Args&... args) {
  throw Error(str_cat(who, ": ", args...));
}

}  // namespace

NamedTensors load_pth(const std::string& path, const PthLoadOptions& options) {
  const std::string who = "load_pth: " + path;
  uint64_t file_size = 0;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(
      detail::open_regular_file(path, who, "a torch.save .pth file", file_size), &std::fclose);
  {
    unsigned char magic[4] = {0, 0, 0, 0};
    const size_t got = std::fread(magic, 1, 4, file.get());
    if (got >= 2 && magic[0] == 0x80 && magic[1] <= 5)
      fail_with(who, "this is PyTorch's legacy (pre-1.6) pickle format, which ember does not read; re-save it with a current "
           "PyTorch: torch.save(torch.load(f), g)");
    if (got < 4 || std::memcmp(magic, "PK\x03\x04", 4) != 0)
      fail_with(who, "not a zip archive (torch.save files start with 'PK\\3\\4')");
  }
  const detail::ZipReader zip(file.get(), file_size, who);

  // The archive's one folder holds data.pkl; PyTorch names it after the file, so find it.
  const detail::ZipEntry* pkl = nullptr;
  for (const detail::ZipEntry& e : zip.entries()) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      if (pkl) fail_with(who, "two data.pkl entries ('", cut_brief(pkl->name), "', '", cut_brief(e.name), "')");
      pkl = &e;
    }
  }
  if (!pkl) fail_with(who, "no <archive>/data.pkl entry: not a torch.save archive");
  const std::string prefix = pkl->name.substr(0, pkl->name.size() - std::string("data.pkl").size());
  if (const detail::ZipEntry* bo = zip.find(prefix + "byteorder")) {
    if (bo->size > 16) fail_with(who, "byteorder entry of ", bo->size, " bytes");
    const std::string order = zip.read_string(*bo);
    if (order != "little") fail_with(who, "byte order '", cut_brief(order), "': only little-endian archives are read");
  }
  const std::string pickle = zip.read_string(*pkl);  // within the file: the reader checked its size
  detail::PickledStateDict sd = detail::unpickle_state_dict(pickle, who);

  // Every storage's entry exists and holds exactly its elements; every tensor lies inside its
  // storage. Only then is anything allocated.
  std::vector<const detail::ZipEntry*> entries(sd.storages.size());
  for (size_t k = 0; k < sd.storages.size(); ++k) {
    const detail::PickledStorage& s = sd.storages[k];
    const detail::ZipEntry* e = zip.find(prefix + "data/" + s.key);
    if (!e) fail_with(who, "storage '", cut_brief(s.key), "' has no entry ", cut_brief(prefix + "data/" + s.key), " in the archive");
    uint64_t bytes = 0;
    if (!mul_ok(static_cast<uint64_t>(s.numel), dtype_size(s.dtype), bytes) || bytes != e->size)
      fail_with(who, "storage '", cut_brief(s.key), "' claims ", s.numel, " ", dtype_name(s.dtype), " elements but its entry holds ",
           e->size, " bytes");
    entries[k] = e;
  }
  // Deflated storages may exceed the file (by deflate's ratio at most, which the zip reader checked).
  uint64_t stored = 0, total = 0;
  for (const detail::ZipEntry* e : entries)
    if (!add_ok(stored, e->size, stored)) stored = std::numeric_limits<uint64_t>::max();
  const uint64_t budget = std::max(file_size, stored);
  std::unordered_set<std::string> names;
  for (const detail::PickledTensor& t : sd.tensors) {
    const detail::PickledStorage& s = sd.storages[t.storage];
    const std::string nm = cut_brief(t.name);
    if (!names.insert(t.name).second) fail_with(who, "tensor '", nm, "' appears twice");
    uint64_t numel = 1, last = static_cast<uint64_t>(t.offset);
    for (size_t d = 0; d < t.size.size(); ++d) {
      uint64_t span = 0;
      if (!mul_ok(numel, static_cast<uint64_t>(t.size[d]), numel) ||
          (t.size[d] > 0 && (!mul_ok(static_cast<uint64_t>(t.size[d] - 1), static_cast<uint64_t>(t.stride[d]), span) ||
                             !add_ok(last, span, last))))
        fail_with(who, "tensor '", nm, "': size ", shape_str(t.size), " with stride ", shape_str(t.stride), " overflows");
    }
    if (numel > 0 && last >= static_cast<uint64_t>(s.numel))
      fail_with(who, "tensor '", nm, "' (size ", shape_str(t.size), ", stride ", shape_str(t.stride), ", offset ", t.offset,
           ") reaches element ", last, " of storage '", cut_brief(s.key), "', which has ", s.numel,
           " elements: the storage is shorter than its tensor");
    if (numel > static_cast<uint64_t>(s.numel))
      fail_with(who, "tensor '", nm, "' has ", numel, " elements, more than its storage's ", s.numel,
           " (an expanded view); save t.contiguous() instead");
    if (!add_ok(total, numel * dtype_size(s.dtype), total) || total / kMaxAmplification > budget)
      fail_with(who, "the tensors together hold more than ", kMaxAmplification, "x the file's (or its storages') ", budget,
           " bytes (many views of the same storages)");
  }

  // One storage at a time: read it, then copy out each of its tensors. A tensor that is its whole
  // storage, contiguous, is read straight into place.
  NamedTensors out(sd.tensors.size());
  std::vector<std::vector<size_t>> users(sd.storages.size());
  for (size_t i = 0; i < sd.tensors.size(); ++i) users[sd.tensors[i].storage].push_back(i);
  auto fix_bool = [](Tensor& t) {  // a C++ bool must hold 0 or 1
    auto* p = static_cast<unsigned char*>(t.data_ptr());
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = p[i] != 0;
  };
  for (size_t k = 0; k < sd.storages.size(); ++k) {
    if (users[k].empty()) continue;
    const DType dt = sd.storages[k].dtype;
    const size_t es = dtype_size(dt);
    Tensor raw;
    for (size_t i : users[k]) {
      const detail::PickledTensor& t = sd.tensors[i];
      const Shape shape(t.size.begin(), t.size.end());
      bool whole = t.offset == 0 && users[k].size() == 1;
      int64_t expect = 1;
      for (size_t d = shape.size(); d-- > 0;) {
        if (shape[d] != 1 && t.stride[d] != expect) whole = false;
        expect *= shape[d];
      }
      Tensor v = empty(shape, TensorOptions(dt));
      if (whole && expect == sd.storages[k].numel) {
        zip.read(*entries[k], v.data_ptr());
        if (dt == DType::Bool) fix_bool(v);
      } else {
        if (!raw.defined()) {
          raw = empty({sd.storages[k].numel}, TensorOptions(dt));
          zip.read(*entries[k], raw.data_ptr());
          if (dt == DType::Bool) fix_bool(raw);
        }
        const char* base = static_cast<const char*>(raw.data_ptr());
        char* dst = static_cast<char*>(v.data_ptr());
        std::vector<int64_t> idx(shape.size(), 0);
        for (int64_t n = 0; n < v.numel(); ++n) {
          int64_t off = t.offset;
          for (size_t d = 0; d < shape.size(); ++d) off += idx[d] * t.stride[d];
          std::memcpy(dst + static_cast<size_t>(n) * es, base + static_cast<size_t>(off) * es, es);
          for (size_t d = shape.size(); d-- > 0;) {
            if (++idx[d] < shape[d]) break;
            idx[d] = 0;
          }
        }
      }
      if (options.half_to_f32 && (dt == DType::BF16 || dt == DType::F16)) v = to_f32(v);
      out[i] = {t.name, std::move(v)};
    }
  }
  return out;
}

namespace {

const char* storage_name(DType dt) {
  switch (dt) {
    case DType::F32: return "FloatStorage";
    case DType::F64: return "DoubleStorage";
    case DType::F16: return "HalfStorage";
    case DType::BF16: return "BFloat16Storage";
    case DType::I64: return "LongStorage";
    case DType::I32: return "IntStorage";
    case DType::U8: return "ByteStorage";
    case DType::Bool: return "BoolStorage";
  }
  return "";
}

// A protocol-2 pickle writer for exactly the state_dict shape torch.save itself writes.
struct PickleOut {
  std::string s;
  void op(char c) { s.push_back(c); }
  void global(const char* module, const char* name) { s += str_cat("c", module, "\n", name, "\n"); }
  void unicode(const std::string& v) {
    op('X');
    for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>(static_cast<uint32_t>(v.size()) >> (8 * i)));
    s += v;
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');
      s.push_back(static_cast<char>(v));
    } else if (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
      op('J');
      for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>(static_cast<uint32_t>(v) >> (8 * i)));
    } else {
      op('\x8a');
      s.push_back(8);
      for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>(static_cast<uint64_t>(v) >> (8 * i)));
    }
  }
  void ints(const Shape& v) {
    op('(');
    for (int64_t x : v) integer(x);
    op('t');
  }
  void ordered_dict() {
    global("collections", "OrderedDict");
    op(')');
    op('R');
  }
};

}  // namespace

void save_pth(const std::string& path, const NamedTensors& tensors) {
  std::unordered_set<std::string> names;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    EMBER_CHECK(!name.empty(), "save_pth: ", path, ": tensor #", i, " has an empty name");
    EMBER_CHECK(name.size() < 0xFFFFFFFFu, "save_pth: ", path, ": tensor #", i, "'s name is too long");
    EMBER_CHECK(t.defined(), "save_pth: ", path, ": tensor '", cut_brief(name), "' is undefined");
    EMBER_CHECK(names.insert(name).second, "save_pth: ", path, ": duplicate tensor name '", cut_brief(name), "'");
  }
  PickleOut p;
  p.s = "\x80\x02";
  p.ordered_dict();
  p.op('(');
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i].second;
    p.unicode(tensors[i].first);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.op('(');
    p.op('(');
    p.unicode("storage");
    p.global("torch", storage_name(t.dtype()));
    p.unicode(std::to_string(i));
    p.unicode("cpu");
    p.integer(t.numel());
    p.op('t');
    p.op('Q');
    p.integer(0);
    p.ints(t.shape());
    Shape stride(t.shape().size());
    int64_t acc = 1;
    for (size_t d = stride.size(); d-- > 0;) {
      stride[d] = acc;
      acc *= t.shape()[d];
    }
    p.ints(stride);
    p.op('\x89');
    p.ordered_dict();
    p.op('t');
    p.op('R');
  }
  p.op('u');
  p.op('.');

  detail::write_file_atomic(
      path,
      [&](std::FILE* f) {
        detail::ZipWriter zip(f);
        zip.add("archive/data.pkl", p.s.data(), p.s.size());
        zip.add("archive/byteorder", "little", 6);
        // One tensor at a time on the host, contiguous.
        for (size_t i = 0; i < tensors.size(); ++i) {
          Tensor host = tensors[i].second.detach();
          if (!host.device().is_cpu()) host = host.to(Device::cpu());
          if (!host.is_contiguous()) {
            Tensor c = empty(host.shape(), TensorOptions(host.dtype()));
            const size_t es = dtype_size(host.dtype());
            const char* base = static_cast<const char*>(host.data_ptr());
            char* dst = static_cast<char*>(c.data_ptr());
            std::vector<int64_t> idx(host.dim(), 0);
            for (int64_t n = 0; n < host.numel(); ++n) {
              int64_t off = 0;
              for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * host.strides()[d];
              std::memcpy(dst + static_cast<size_t>(n) * es, base + off * static_cast<int64_t>(es), es);
              for (size_t d = idx.size(); d-- > 0;) {
                if (++idx[d] < host.shape()[d]) break;
                idx[d] = 0;
              }
            }
            host = c;
          }
          zip.add("archive/data/" + std::to_string(i), host.data_ptr(),
                  static_cast<uint64_t>(host.numel()) * dtype_size(host.dtype()));
        }
        zip.add("archive/version", "3\n", 2);
        zip.finish();
      },
      "save_pth");
}

}  // namespace ember::io
