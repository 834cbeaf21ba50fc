// IDX files: the validating reader (raw or gzip), the atomic writer and the MNIST directory loader.
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "cpp/core/tensor_impl.h"
#include "cpp/io/atomic_file.h"
#include "cpp/io/read_file.h"
#include "ember/data.h"

namespace ember::data {
namespace {

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

std::string hex8(unsigned v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", v);
  return buf;
}

const char* idx_type_name(unsigned type) {
  switch (type) {
    case 0x08:
      return "u8";
    case 0x09:
      return "i8";
    case 0x0B:
      return "i16";
    case 0x0C:
      return "i32";
    case 0x0D:
      return "f32";
    case 0x0E:
      return "f64";
    default:
      return "not an IDX type";
  }
}

uint32_t load_be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// The bytes of an IDX file front to back, read straight from disk or inflated from gzip in chunks
// (so memory follows the data actually decoded, never a size some header claims). Offsets in
// errors count bytes of the IDX data, i.e. of the decompressed stream for gzip files.
class IdxInput {
 public:
  IdxInput(std::string path, const char* fn) : path_(std::move(path)), fn_(fn) {
    file_ = io::detail::open_regular_file(path_, detail::str_cat(fn_, ": ", path_), "an IDX file", file_size_);
    // Detection by content: a .gz renamed without the suffix (or the reverse) still reads correctly.
    unsigned char magic[2] = {0, 0};
    const size_t got = std::fread(magic, 1, 2, file_);
    if (std::ferror(file_)) fail_io(detail::str_cat("cannot read: ", std::strerror(errno)));
    gzip_ = got == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    if (std::fseek(file_, 0, SEEK_SET) != 0) fail_io(detail::str_cat("cannot seek: ", std::strerror(errno)));
    if (gzip_) {
      in_buf_.resize(kInChunk);
      // 16 + MAX_WBITS: gzip wrapper only (a zlib or raw deflate stream is not an IDX .gz).
      if (inflateInit2(&strm_, 16 + MAX_WBITS) != Z_OK) fail_io("zlib inflateInit2 failed");
      inflating_ = true;
    }
  }
  ~IdxInput() {
    if (inflating_) inflateEnd(&strm_);
    if (file_) std::fclose(file_);
  }
  IdxInput(const IdxInput&) = delete;
  IdxInput& operator=(const IdxInput&) = delete;

  bool gzip() const { return gzip_; }
  uint64_t file_size() const { return file_size_; }
  uint64_t position() const { return pos_; }
  const std::string& path() const { return path_; }

  // Reads up to n bytes; fewer only at the end of the data. A gzip stream that is corrupt, cut short
  // or followed by stray bytes throws.
  size_t read(void* dst, size_t n) {
    size_t done = gzip_ ? inflate_into(static_cast<unsigned char*>(dst), n) : std::fread(dst, 1, n, file_);
    if (!gzip_ && done < n && std::ferror(file_)) fail_io(detail::str_cat("read error: ", std::strerror(errno)));
    pos_ += done;
    return done;
  }

  // "read_idx_images: PATH: byte 16: WHAT" (gzip: "byte 16 of the decompressed data").
  [[noreturn]] void fail(uint64_t offset, const std::string& what) const {
    throw Error(
        detail::str_cat(fn_, ": ", path_, ": byte ", offset, gzip_ ? " of the decompressed data" : "", ": ", what));
  }

 private:
  static constexpr size_t kInChunk = size_t{1} << 16;

  [[noreturn]] void fail_io(const std::string& what) const {
    throw Error(detail::str_cat(fn_, ": ", path_, ": ", what));
  }
  [[noreturn]] void fail_gzip(const std::string& what) const {
    throw Error(detail::str_cat(fn_, ": ", path_, ": gzip stream, compressed byte ", compressed_pos(), " (", pos_,
                                " bytes decompressed): ", what));
  }
  uint64_t compressed_pos() const { return in_read_ - strm_.avail_in; }

  // Tops up the input buffer, keeping unconsumed bytes; returns false at the end of the file.
  bool refill() {
    if (strm_.avail_in > 0 && strm_.next_in != in_buf_.data())
      std::memmove(in_buf_.data(), strm_.next_in, strm_.avail_in);
    const size_t got = std::fread(in_buf_.data() + strm_.avail_in, 1, in_buf_.size() - strm_.avail_in, file_);
    if (got == 0 && std::ferror(file_)) fail_io(detail::str_cat("read error: ", std::strerror(errno)));
    in_read_ += got;
    strm_.next_in = in_buf_.data();
    strm_.avail_in += static_cast<uInt>(got);
    return got > 0;
  }

  size_t inflate_into(unsigned char* dst, size_t n) {
    size_t done = 0;
    while (done < n && !finished_) {
      if (strm_.avail_in == 0 && !refill())
        fail_gzip(detail::str_cat("the file ends (", file_size_,
                                  " bytes) inside the compressed stream, expected the rest of the stream: the file "
                                  "was cut short; fetch it again (tools/get-data.sh)"));
      const size_t want = std::min<size_t>(n - done, UINT_MAX);
      strm_.next_out = dst + done;
      strm_.avail_out = static_cast<uInt>(want);
      const int rc = inflate(&strm_, Z_NO_FLUSH);
      done += want - strm_.avail_out;
      if (rc == Z_STREAM_END) {
        end_of_member();
      } else if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT || rc == Z_STREAM_ERROR) {
        fail_gzip(detail::str_cat("corrupt data (zlib: ", strm_.msg ? strm_.msg : "invalid stream",
                                  "), expected a valid deflate stream"));
      } else if (rc == Z_MEM_ERROR) {
        fail_io("zlib ran out of memory");
      }
      // Z_OK and Z_BUF_ERROR (no progress until more input arrives) continue the loop.
    }
    return done;
  }

  // After a member's trailer (CRC and size checked by zlib): another member may follow (gzip allows
  // concatenation); anything else is an error rather than silently ignored.
  void end_of_member() {
    if (strm_.avail_in < 2) refill();
    if (strm_.avail_in == 0) {
      finished_ = true;
      return;
    }
    if (strm_.avail_in >= 2 && strm_.next_in[0] == 0x1f && strm_.next_in[1] == 0x8b) {
      inflateReset(&strm_);
      return;
    }
    fail_gzip(detail::str_cat(file_size_ - compressed_pos(),
                              " stray bytes after the end of the gzip stream, expected the file to end there"));
  }

  std::string path_;
  const char* fn_;
  FILE* file_ = nullptr;
  uint64_t file_size_ = 0;
  bool gzip_ = false;
  uint64_t pos_ = 0;  // IDX bytes delivered so far
  z_stream strm_{};
  bool inflating_ = false;
  bool finished_ = false;
  std::vector<unsigned char> in_buf_;
  uint64_t in_read_ = 0;  // compressed bytes read from the file so far
};

enum class IdxKind { Images, Labels };

struct IdxHeader {
  std::vector<uint32_t> dims;
  uint64_t header_bytes = 0;
  uint64_t data_bytes = 0;  // product of the dims (u8 elements)
  std::string claim;        // "60000 x 28 x 28 = 47040000 bytes", for messages
};

IdxHeader read_header(IdxInput& in, IdxKind kind) {
  const bool images = kind == IdxKind::Images;
  const unsigned want_dims = images ? 3 : 1;
  const uint32_t want_magic = 0x0800u | want_dims;
  const std::string expected = detail::str_cat(hex32(want_magic), images ? " (images: N, rows, cols)" : " (labels: N)");

  unsigned char m[4];
  const size_t got = in.read(m, 4);
  if (got == 0) in.fail(0, detail::str_cat("the file is empty, expected an IDX header with magic ", expected));
  if (got < 4) in.fail(got, detail::str_cat("the data ends inside the 4-byte magic, expected magic ", expected));
  const uint32_t magic = load_be32(m);
  if (m[0] != 0 || m[1] != 0)
    in.fail(0, detail::str_cat("magic ", hex32(magic),
                               " is not an IDX magic (its first two bytes must be zero), expected ", expected));
  if (m[3] != want_dims) {
    if (m[2] == 0x08 && m[3] == 1)
      in.fail(0, detail::str_cat("magic ", hex32(magic), " is a label file, expected ", expected));
    if (m[2] == 0x08 && m[3] == 3)
      in.fail(0, detail::str_cat("magic ", hex32(magic), " is an image file, expected ", expected));
    in.fail(3, detail::str_cat("magic ", hex32(magic), " has ", unsigned{m[3]}, " dims, expected ", want_dims,
                               " dims, magic ", expected));
  }
  if (m[2] != 0x08)
    in.fail(2, detail::str_cat("element type ", hex8(m[2]), " (", idx_type_name(m[2]), ") in magic ", hex32(magic),
                               ", expected 0x08 (u8), magic ", expected));

  IdxHeader h;
  h.header_bytes = 4 + 4 * uint64_t{want_dims};
  unsigned char d[12];
  const size_t dim_bytes = 4 * want_dims;
  const size_t got_dims = in.read(d, dim_bytes);
  if (got_dims < dim_bytes)
    in.fail(4 + got_dims, detail::str_cat("the data ends inside the header, expected ", h.header_bytes,
                                          " header bytes (magic, then ", want_dims, " u32 dims)"));
  static const char* const kImageDims[] = {"N", "rows", "cols"};
  uint64_t product = 1;
  bool overflow = false;
  for (unsigned i = 0; i < want_dims; ++i) {
    const uint32_t v = load_be32(d + 4 * i);
    h.dims.push_back(v);
    if (images && i > 0 && v == 0) in.fail(4 + 4 * i, detail::str_cat(kImageDims[i], " is 0, expected at least 1"));
    overflow = overflow || __builtin_mul_overflow(product, uint64_t{v}, &product);
  }
  std::string dims_text;
  for (unsigned i = 0; i < want_dims; ++i) dims_text += detail::str_cat(i ? " x " : "", h.dims[i]);
  if (overflow || product > static_cast<uint64_t>(INT64_MAX))
    in.fail(4,
            detail::str_cat("dims ", dims_text, " overflow a 64-bit size, expected dims whose product fits the file"));
  h.data_bytes = product;
  h.claim = detail::str_cat(dims_text, want_dims > 1 ? detail::str_cat(" = ", product) : "", " bytes");
  return h;
}

// deflate expands at most 1032:1 (RFC 1951 length/distance codes: 258 bytes per 2 bits at best).
constexpr uint64_t kMaxDeflateRatio = 1032;

// Calls `sink(bytes, n, at)` for consecutive pieces of the data after the header, `at` counting data
// bytes from 0, after checking what the file can hold: a raw file's size must match the header
// exactly before anything is read; a gzip stream must be able to expand to the claimed size, must
// hold every claimed byte and end right after them. The sink allocates only as the data arrives.
// Throws unless the file can hold what the header claims: a raw file exactly (by its size), a gzip
// file within the size limit and deflate's ratio. Nothing may be allocated for the data before this.
void check_claim(IdxInput& in, const IdxHeader& h) {
  const uint64_t start = h.header_bytes, end = h.header_bytes + h.data_bytes;
  if (!in.gzip()) {
    const uint64_t avail = in.file_size() - start;
    if (avail < h.data_bytes)
      in.fail(in.file_size(), detail::str_cat("the file ends after ", avail, " data bytes, expected ", h.claim,
                                              " from byte ", start, " (the header claims more than the file holds)"));
    if (avail > h.data_bytes)
      in.fail(end, detail::str_cat(avail - h.data_bytes, " trailing bytes after the data (", h.claim, " from byte ",
                                   start, "), expected the file to end at byte ", end));
  } else {
    if (h.data_bytes > kMaxGzipIdxBytes)
      in.fail(4, detail::str_cat("dims claim ", h.claim, ", more than the ", kMaxGzipIdxBytes,
                                 "-byte limit for gzip IDX files, expected a smaller file (gunzip it to read it raw)"));
    if (end > kMaxDeflateRatio * in.file_size())
      in.fail(4, detail::str_cat("dims claim ", h.claim, ", more than a ", in.file_size(),
                                 "-byte gzip file can expand to (deflate expands at most ", kMaxDeflateRatio,
                                 ":1): the header is wrong or the file was cut short"));
  }
}

template <class Sink>
void read_payload(IdxInput& in, const IdxHeader& h, Sink&& sink) {
  const uint64_t start = h.header_bytes, end = h.header_bytes + h.data_bytes;
  check_claim(in, h);
  std::vector<unsigned char> chunk(static_cast<size_t>(std::min<uint64_t>(h.data_bytes, uint64_t{1} << 20)));
  for (uint64_t done = 0; done < h.data_bytes;) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(chunk.size(), h.data_bytes - done));
    const size_t got = in.read(chunk.data(), want);
    if (got > 0) sink(chunk.data(), got, done);
    done += got;
    if (got < want)
      in.fail(start + done, detail::str_cat("the data ends after ", done, " data bytes, expected ", h.claim,
                                            " from byte ", start, " (the header claims more than the file holds)"));
  }
  if (!in.gzip()) return;
  // Reading past the data drives the decoder to the end of the stream, so a missing or damaged
  // trailer (CRC, length) is caught even when every data byte arrived.
  // The stray bytes are counted up to 1 MiB only: a stream may decompress to far more than that.
  unsigned char extra[4096];
  uint64_t trailing = 0;
  for (size_t n; trailing < (uint64_t{1} << 20) && (n = in.read(extra, sizeof extra)) > 0;) trailing += n;
  if (trailing > 0)
    in.fail(end, detail::str_cat(trailing >= (uint64_t{1} << 20) ? "at least " : "", trailing,
                                 " trailing bytes after the data (", h.claim, " from byte ", start,
                                 "), expected the data to end at byte ", end));
}

// The payload as a tensor of `dtype` (u8 bytes widened, each passed through `check(value, index)`).
// A raw file's size is proven before the tensor is allocated, so its bytes go straight in; a gzip
// stream's bytes are first kept as they arrive (memory follows the data actually decoded, never
// the claim), then converted into the one tensor.
template <class T, class Check>
Tensor read_payload_as(IdxInput& in, const IdxHeader& h, const Shape& shape, DType dtype, Check&& check) {
  if (!in.gzip()) {
    check_claim(in, h);  // before the allocation: the header's claim is not trusted
    Tensor out = make_empty(shape, dtype, Device::cpu());
    T* dst = static_cast<T*>(out.data_ptr());
    read_payload(in, h, [&](const unsigned char* p, size_t n, uint64_t at) {
      for (size_t i = 0; i < n; ++i) dst[at + i] = static_cast<T>(check(p[i], at + i));
    });
    return out;
  }
  std::vector<unsigned char> bytes;
  read_payload(in, h, [&](const unsigned char* p, size_t n, uint64_t) { bytes.insert(bytes.end(), p, p + n); });
  Tensor out = make_empty(shape, dtype, Device::cpu());
  T* dst = static_cast<T*>(out.data_ptr());
  for (size_t i = 0; i < bytes.size(); ++i) dst[i] = static_cast<T>(check(bytes[i], i));
  return out;
}

Tensor read_images(IdxInput& in, const IdxHeader& h) {
  return read_payload_as<uint8_t>(in, h, {h.dims[0], h.dims[1], h.dims[2]}, DType::U8,
                                  [](unsigned char v, uint64_t) { return v; });
}

Tensor read_labels(IdxInput& in, const IdxHeader& h, int64_t num_classes) {
  return read_payload_as<int64_t>(in, h, {h.dims[0]}, DType::I64, [&](unsigned char v, uint64_t i) {
    if (v >= num_classes)
      in.fail(h.header_bytes + i, detail::str_cat("label ", unsigned{v}, " of sample ", i, " is outside [0, ",
                                                  num_classes, "), expected a class index below num_classes"));
    return v;
  });
}

void check_num_classes(const char* who, const std::string& path, int64_t num_classes) {
  EMBER_CHECK(num_classes >= 1 && num_classes <= 256, who, ": ", path, ": num_classes is ", num_classes,
              ", expected 1 to 256 (u8 labels)");
}

// Writes all of `bytes` to a raw or gzip file; throws naming `path` on failure.
class IdxOutput {
 public:
  // Writes `tmp`; errors name `path`, the file the caller asked for.
  IdxOutput(const std::string& tmp, const std::string& path, IdxCompression c)
      : path_(path), gzip_(c == IdxCompression::Gzip) {
    if (gzip_) {
      gz_ = gzopen(tmp.c_str(), "wb");
      if (!gz_) fail(detail::str_cat("cannot create ", tmp, ": ", std::strerror(errno)));
    } else {
      file_ = std::fopen(tmp.c_str(), "wb");
      if (!file_) fail(detail::str_cat("cannot create ", tmp, ": ", std::strerror(errno)));
    }
  }
  ~IdxOutput() {
    if (gz_) gzclose(gz_);
    if (file_) std::fclose(file_);
  }
  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n, 1u << 30));
      if (gzip_) {
        if (gzwrite(gz_, p, chunk) != static_cast<int>(chunk)) {
          int code = 0;
          fail(detail::str_cat("gzip write failed: ", gzerror(gz_, &code)));
        }
      } else if (std::fwrite(p, 1, chunk, file_) != chunk) {
        fail(detail::str_cat("write failed: ", std::strerror(errno)));
      }
      p += chunk;
      n -= chunk;
    }
  }
  void close() {
    if (gzip_) {
      const int rc = gzclose(gz_);
      gz_ = nullptr;
      if (rc != Z_OK) fail(detail::str_cat("closing the gzip stream failed (zlib error ", rc, ")"));
    } else {
      const int rc = std::fclose(file_);  // flushes: a full disk shows here
      file_ = nullptr;
      if (rc != 0) fail(detail::str_cat("closing failed: ", std::strerror(errno)));
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(detail::str_cat("write_idx: ", path_, ": ", what));
  }
  std::string path_;
  bool gzip_;
  gzFile gz_ = nullptr;
  FILE* file_ = nullptr;
};

}  // namespace

Tensor read_idx_images(const std::string& path) {
  IdxInput in(path, "read_idx_images");
  return read_images(in, read_header(in, IdxKind::Images));
}

Tensor read_idx_labels(const std::string& path, int64_t num_classes) {
  check_num_classes("read_idx_labels", path, num_classes);
  IdxInput in(path, "read_idx_labels");
  return read_labels(in, read_header(in, IdxKind::Labels), num_classes);
}

void write_idx(const std::string& path, const Tensor& t, IdxCompression compression) {
  EMBER_CHECK(t.defined(), "write_idx: ", path, ": the tensor is undefined");
  EMBER_CHECK(t.dim() >= 1 && t.dim() <= 255, "write_idx: ", path, ": tensor has ", t.dim(),
              " dims, expected 1 to 255 (IDX stores the dim count in one byte)");
  const DType dt = t.dtype();
  EMBER_CHECK(dt == DType::U8 || dt == DType::I64 || dt == DType::I32, "write_idx: ", path, ": dtype ", dtype_name(dt),
              " cannot be written as IDX u8, expected u8 (images) or i64/i32 (labels in [0, 255])");
  std::vector<unsigned char> header = {0, 0, 0x08, static_cast<unsigned char>(t.dim())};
  for (int64_t d = 0; d < t.dim(); ++d) {
    const int64_t v = t.size(d);
    EMBER_CHECK(v <= int64_t{UINT32_MAX}, "write_idx: ", path, ": dim ", d, " is ", v,
                ", expected at most 2^32 - 1 (IDX dims are u32), shape ", shape_str(t.shape()));
    for (int s = 24; s >= 0; s -= 8) header.push_back(static_cast<unsigned char>(v >> s));
  }
  Tensor bytes = t.cpu().contiguous();
  if (dt != DType::U8) {
    Tensor wide = bytes.to(DType::I64);
    const int64_t* v = wide.data<int64_t>();
    for (int64_t i = 0; i < wide.numel(); ++i)
      EMBER_CHECK(v[i] >= 0 && v[i] <= 255, "write_idx: ", path, ": element ", i, " is ", v[i],
                  ", expected a value in [0, 255] (IDX u8)");
    bytes = wide.to(DType::U8);
  }
  // A temporary beside the target, renamed over it: a reader never sees a half-written file, and a
  // failed write leaves the old file in place. (No fsync: this guards against concurrent readers and
  // errors, not power loss.)
  static std::atomic<uint64_t> serial{0};  // two threads writing one path get separate temporaries
  io::detail::remove_stale_temps(path);    // those of writers killed mid-write
  const std::string tmp = detail::str_cat(path, ".tmp.", getpid(), ".", serial++);
  try {
    IdxOutput out(tmp, path, compression);
    out.write(header.data(), header.size());
    out.write(bytes.data_ptr(), static_cast<size_t>(bytes.numel()));
    out.close();
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw Error(detail::str_cat("write_idx: ", path, ": cannot rename ", tmp, " over it: ", std::strerror(err)));
  }
}

Mnist load_mnist_dir(const std::string& dir, int64_t num_classes) {
  namespace fs = std::filesystem;
  const char* const fetch =
      "run tools/get-data.sh (it checks the MNIST digits shipped in data/mnist and links Fashion-MNIST into "
      "data/fashion-mnist), or pass a folder of the standard IDX files";
  std::error_code ec;
  EMBER_CHECK(fs::is_directory(dir, ec), "load_mnist_dir: ", dir, " is not a directory; ", fetch);
  auto find = [&](const std::string& name) {
    const std::string raw = (fs::path(dir) / name).string();
    if (fs::exists(raw, ec)) return raw;
    if (fs::exists(raw + ".gz", ec)) return raw + ".gz";
    throw Error(detail::str_cat("load_mnist_dir: missing ", raw, "[.gz]; ", fetch));
  };
  check_num_classes("load_mnist_dir", dir, num_classes);
  // Both headers are read and compared before either payload: a label file that claims another
  // count is refused before anything is allocated for it.
  auto load_split = [&](const char* split, const std::string& prefix) {
    const std::string images_path = find(prefix + "-images-idx3-ubyte");
    const std::string labels_path = find(prefix + "-labels-idx1-ubyte");
    IdxInput images_in(images_path, "read_idx_images"), labels_in(labels_path, "read_idx_labels");
    const IdxHeader ih = read_header(images_in, IdxKind::Images), lh = read_header(labels_in, IdxKind::Labels);
    EMBER_CHECK(ih.dims[0] == lh.dims[0], "load_mnist_dir: ", split, ": ", images_path, " declares ", ih.dims[0],
                " images but ", labels_path, " declares ", lh.dims[0],
                " labels, expected equal counts (a mismatched pair of files)");
    MnistSplit s{read_images(images_in, ih), read_labels(labels_in, lh, num_classes)};
    return std::make_pair(s, images_path);
  };
  auto [train, train_path] = load_split("train", "train");
  auto [test, test_path] = load_split("test", "t10k");
  EMBER_CHECK(train.images.size(1) == test.images.size(1) && train.images.size(2) == test.images.size(2),
              "load_mnist_dir: ", test_path, " holds ", test.images.size(1), "x", test.images.size(2), " images but ",
              train_path, " holds ", train.images.size(1), "x", train.images.size(2),
              ", expected one image size for both splits");
  return Mnist{std::move(train), std::move(test)};
}

}  // namespace ember::data
