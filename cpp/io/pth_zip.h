// Internal: the zip container of torch.save archives — a validating reader and a writer.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

namespace ember::io::detail {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflated
  uint32_t crc = 0;
  uint64_t comp_size = 0;
  uint64_t size = 0;
  uint64_t data_offset = 0;  // first byte of the (compressed) data in the file
};

// Parses and validates the whole central directory on construction: the end record (zip64 too),
// every entry's offsets and sizes against the file size (overflow-checked), its local header and
// name, duplicates, encryption, compression methods and deflate ratios. Errors are ember::Error
// "<who>: <problem>". Nothing is allocated beyond the central directory's size, itself within the
// file.
class ZipReader {
 public:
  ZipReader(std::FILE* f, uint64_t file_size, std::string who);
  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;
  // The entry's uncompressed bytes into dst (exactly e.size bytes), CRC-32 checked.
  void read(const ZipEntry& e, void* dst) const;
  std::string read_string(const ZipEntry& e) const;

 private:
  template <class... Args> [[noreturn]] void fail(const Args&... args) const;
  void read_at(void* dst, uint64_t n, uint64_t at) const;
  std::FILE* f_;
  uint64_t size_;
  std::string who_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// Writes a zip of stored entries, each entry's data 64-byte aligned (padding in the local
// header's extra field, as PyTorch's writer does) and zip64 records where a size or offset needs
// them (or everywhere with force_zip64, for tests).
class ZipWriter {
 public:
  explicit ZipWriter(std::FILE* f, bool force_zip64 = false) : f_(f), force64_(force_zip64) {}
  void add(const std::string& name, const void* data, uint64_t n);
  // Streams one entry whose bytes come in pieces; crc and size are known up front.
  void begin(const std::string& name, uint64_t n, uint32_t crc);
  void write(const void* data, uint64_t n);
  void finish();

 private:
  struct Written {
    std::string name;
    uint32_t crc;
    uint64_t size, offset;
  };
  std::FILE* f_;
  bool force64_;
  uint64_t pos_ = 0;
  std::vector<Written> written_;
};

}  // namespace ember::io::detail
