// The zip container of torch.save archives: a reader that validates every offset and size against
// the file before it allocates or reads, and a stored-entry writer with 64-byte aligned data.
#include "cpp/io/pth_zip.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "cpp/core/text_brief.h"
#include "cpp/io/atomic_file.h"
#include "ember/error.h"
#include "ember/io.h"

namespace ember::io::detail {

namespace {

using ember::detail::cut_brief;
using ember::detail::str_cat;

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50, kEnd64LocatorSig = 0x07064b50;
constexpr uint64_t kEndSize = 22, kCentralSize = 46, kLocalSize = 30, kEnd64Size = 56, kLocatorSize = 20;
// Deflate cannot expand data more than about 1032:1; a larger claimed size is a lie.
constexpr uint64_t kMaxDeflateRatio = 1032;

uint16_t u16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t u32(const unsigned char* p) { return u16(p) | (static_cast<uint32_t>(u16(p + 2)) << 16); }
uint64_t u64(const unsigned char* p) { return u32(p) | (static_cast<uint64_t>(u32(p + 4)) << 32); }

void put16(std::string& s, uint64_t v) {
  for (int i = 0; i < 2; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}
void put32(std::string& s, uint64_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}
void put64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
}

// a + b <= limit without overflow.
bool fits(uint64_t a, uint64_t b, uint64_t limit) { return a <= limit && b <= limit - a; }

}  // namespace

template <class... Args> void ZipReader::fail(const Args&... args) const { throw Error(str_cat(who_, ": ", args...)); }

void ZipReader::read_at(void* dst, uint64_t n, uint64_t at) const {
  if (n == 0) return;
  if (!fits(at, n, size_)) fail("read of ", n, " bytes at offset ", at, " runs past the end of the file (", size_, " bytes)");
  if (at > static_cast<uint64_t>(std::numeric_limits<long>::max()) ||
      fseeko(f_, static_cast<off_t>(at), SEEK_SET) != 0)
    fail("cannot seek to offset ", at, ": ", std::strerror(errno));
  if (std::fread(dst, 1, n, f_) != n)
    fail("short read of ", n, " bytes at offset ", at, std::ferror(f_) ? str_cat(": ", std::strerror(errno)) : "");
}

ZipReader::ZipReader(std::FILE* f, uint64_t file_size, std::string who) : f_(f), size_(file_size), who_(std::move(who)) {
  if (size_ < kEndSize) fail("file is ", size_, " bytes, too short for a zip archive (the end record alone is 22)");
  // The end record sits in the last 22 + 65535 (its comment) bytes; search backwards for one whose
  // comment ends exactly at the end of the file.
  const uint64_t tail_n = std::min<uint64_t>(size_, kEndSize + 0xFFFF);
  std::vector<unsigned char> tail(tail_n);
  read_at(tail.data(), tail_n, size_ - tail_n);
  int64_t end_at = -1;
  for (int64_t i = static_cast<int64_t>(tail_n - kEndSize); i >= 0; --i) {
    const unsigned char* p = tail.data() + i;
    if (u32(p) == kEndSig && static_cast<uint64_t>(i) + kEndSize + u16(p + 20) == tail_n) {
      end_at = i;
      break;
    }
  }
  if (end_at < 0)
    fail("no zip end-of-central-directory record (the file is truncated or not a zip archive; torch.save writes zip "
         "archives since PyTorch 1.6)");
  const unsigned char* e = tail.data() + end_at;
  const uint64_t end_pos = size_ - tail_n + static_cast<uint64_t>(end_at);
  uint64_t count = u16(e + 10), cd_size = u32(e + 12), cd_offset = u32(e + 16);
  if (u16(e + 4) != 0 || u16(e + 6) != 0 || u16(e + 8) != u16(e + 10))
    fail("multi-disk (spanned) zip archives are not supported");
  uint64_t cd_limit = end_pos;  // the central directory ends before the end record(s)
  if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
    // zip64: a locator right before the end record points at the zip64 end record.
    if (end_pos < kLocatorSize) fail("zip64 sizes announced but no room for the zip64 locator");
    unsigned char loc[kLocatorSize];
    read_at(loc, kLocatorSize, end_pos - kLocatorSize);
    if (u32(loc) != kEnd64LocatorSig) fail("zip64 sizes announced but the zip64 end-record locator is missing");
    const uint64_t e64_pos = u64(loc + 8);
    if (u32(loc + 4) != 0 || u32(loc + 16) != 1) fail("multi-disk (spanned) zip64 archives are not supported");
    if (!fits(e64_pos, kEnd64Size, end_pos - kLocatorSize))
      fail("zip64 end record offset ", e64_pos, " lies outside the archive (", size_, " bytes)");
    unsigned char e64[kEnd64Size];
    read_at(e64, kEnd64Size, e64_pos);
    if (u32(e64) != kEnd64Sig) fail("no zip64 end record at offset ", e64_pos);
    if (u32(e64 + 16) != 0 || u32(e64 + 20) != 0 || u64(e64 + 24) != u64(e64 + 32))
      fail("multi-disk (spanned) zip64 archives are not supported");
    count = u64(e64 + 32);
    cd_size = u64(e64 + 40);
    cd_offset = u64(e64 + 48);
    cd_limit = e64_pos;
  }
  if (!fits(cd_offset, cd_size, cd_limit))
    fail("central directory (offset ", cd_offset, ", ", cd_size, " bytes) runs past its end at offset ", cd_limit,
         " (file of ", size_, " bytes): truncated or damaged archive");
  if (count > cd_size / kCentralSize)
    fail("the end record claims ", count, " entries but the central directory has room for at most ",
         cd_size / kCentralSize);
  std::vector<unsigned char> cd(cd_size);
  read_at(cd.data(), cd_size, cd_offset);
  uint64_t p = 0;
  entries_.reserve(count);
  for (uint64_t k = 0; k < count; ++k) {
    if (!fits(p, kCentralSize, cd_size)) fail("central directory entry #", k, " runs past the directory's end");
    const unsigned char* c = cd.data() + p;
    if (u32(c) != kCentralSig) fail("central directory entry #", k, " has a bad signature");
    const uint16_t flags = u16(c + 8);
    ZipEntry z;
    z.method = u16(c + 10);
    z.crc = u32(c + 16);
    z.comp_size = u32(c + 20);
    z.size = u32(c + 24);
    const uint64_t name_n = u16(c + 28), extra_n = u16(c + 30), comment_n = u16(c + 32);
    uint64_t local = u32(c + 42);
    if (!fits(p + kCentralSize, name_n + extra_n + comment_n, cd_size))
      fail("central directory entry #", k, "'s name and extra fields run past the directory's end");
    z.name.assign(reinterpret_cast<const char*>(c + kCentralSize), name_n);
    // zip64 extra field: the 64-bit values of exactly the fields that read 0xFFFFFFFF, in order.
    const unsigned char* x = c + kCentralSize + name_n;
    for (uint64_t q = 0; q + 4 <= extra_n;) {
      const uint16_t id = u16(x + q), n = u16(x + q + 2);
      if (q + 4 + n > extra_n) fail("entry '", cut_brief(z.name), "': extra field runs past its end");
      if (id == 0x0001) {
        uint64_t at = q + 4;
        auto take = [&](uint64_t& v) {
          if (at + 8 > q + 4 + n) fail("entry '", cut_brief(z.name), "': zip64 extra field too short");
          v = u64(x + at);
          at += 8;
        };
        if (z.size == 0xFFFFFFFF) take(z.size);
        if (z.comp_size == 0xFFFFFFFF) take(z.comp_size);
        if (local == 0xFFFFFFFF) take(local);
      }
      q += 4 + n;
    }
    p += kCentralSize + name_n + extra_n + comment_n;
    const std::string nm = cut_brief(z.name);
    if (flags & 0x1) fail("entry '", nm, "' is encrypted; torch.save archives never are");
    if (z.method != 0 && z.method != 8)
      fail("entry '", nm, "' uses compression method ", z.method, "; only stored (0) and deflated (8) are supported");
    if (z.method == 0 && z.comp_size != z.size)
      fail("stored entry '", nm, "' has compressed size ", z.comp_size, " != size ", z.size);
    if (z.method == 8 && z.size / kMaxDeflateRatio > z.comp_size + 1)
      fail("deflated entry '", nm, "' claims ", z.size, " bytes from ", z.comp_size,
           " compressed ones, beyond deflate's maximal ratio: damaged or hostile archive");
    if (!fits(local, kLocalSize, cd_offset))
      fail("entry '", nm, "': local header offset ", local, " lies outside the data area (", cd_offset, " bytes)");
    unsigned char lh[kLocalSize];
    read_at(lh, kLocalSize, local);
    if (u32(lh) != kLocalSig) fail("entry '", nm, "': no local header at offset ", local);
    const uint64_t lname_n = u16(lh + 26), lextra_n = u16(lh + 28);
    if (!fits(local + kLocalSize, lname_n + lextra_n, cd_offset))
      fail("entry '", nm, "': local header runs into the central directory");
    if (lname_n != name_n) fail("entry '", nm, "': the local header names another file");
    std::string lname(lname_n, '\0');
    read_at(lname.data(), lname_n, local + kLocalSize);
    if (lname != z.name) fail("entry '", nm, "': the local header names another file ('", cut_brief(lname), "')");
    z.data_offset = local + kLocalSize + lname_n + lextra_n;
    if (!fits(z.data_offset, z.comp_size, cd_offset))
      fail("entry '", nm, "' (", z.comp_size, " bytes at offset ", z.data_offset,
           ") runs past the data area's end at offset ", cd_offset, ": truncated or damaged archive");
    if (!index_.emplace(z.name, entries_.size()).second) fail("entry '", nm, "' appears twice in the archive");
    entries_.push_back(std::move(z));
  }
}

const ZipEntry* ZipReader::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

void ZipReader::read(const ZipEntry& e, void* dst) const {
  if (e.method == 0) {
    read_at(dst, e.size, e.data_offset);
  } else {
    // Inflate in chunks straight into dst; the stream must end exactly at e.size bytes.
    z_stream zs{};
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) fail("zlib inflateInit2 failed");
    std::vector<unsigned char> buf(1 << 16);
    uint64_t left = e.comp_size, at = e.data_offset, produced = 0;
    int rc = Z_OK;
    auto* out = static_cast<unsigned char*>(dst);
    unsigned char spare;
    while (rc != Z_STREAM_END) {
      if (zs.avail_in == 0) {
        if (left == 0) break;
        const uint64_t n = std::min<uint64_t>(left, buf.size());
        try {
          read_at(buf.data(), n, at);
        } catch (...) {
          inflateEnd(&zs);
          throw;
        }
        at += n;
        left -= n;
        zs.next_in = buf.data();
        zs.avail_in = static_cast<uInt>(n);
      }
      // Past e.size, inflate into one spare byte: any output there is a size lie.
      const bool full = produced == e.size;
      zs.next_out = full ? &spare : out + produced;
      zs.avail_out = full ? 1 : static_cast<uInt>(std::min<uint64_t>(e.size - produced, 1u << 30));
      const uInt before = zs.avail_out;
      rc = inflate(&zs, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
        inflateEnd(&zs);
        fail("entry '", cut_brief(e.name), "': corrupt deflate data (zlib: ", zs.msg ? zs.msg : "error", ")");
      }
      if (full && zs.avail_out != before) {
        inflateEnd(&zs);
        fail("entry '", cut_brief(e.name), "' inflates to more than its declared ", e.size, " bytes");
      }
      if (!full) produced += before - zs.avail_out;
      if (rc == Z_BUF_ERROR && zs.avail_in == 0 && left == 0) break;
    }
    inflateEnd(&zs);
    if (rc != Z_STREAM_END || produced != e.size)
      fail("entry '", cut_brief(e.name), "' inflates to ", produced, " bytes", rc != Z_STREAM_END ? " (truncated stream)" : "",
           ", not its declared ", e.size);
  }
  // CRC-32 over the bytes in pieces of at most 1 GiB (zlib's length type is 32-bit).
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* b = static_cast<const Bytef*>(dst);
  for (uint64_t done = 0; done < e.size;) {
    const uint64_t n = std::min<uint64_t>(e.size - done, 1u << 30);
    crc = crc32(crc, b + done, static_cast<uInt>(n));
    done += n;
  }
  if (static_cast<uint32_t>(crc) != e.crc)
    fail("entry '", cut_brief(e.name), "' fails its CRC-32 check (damaged archive)");
}

std::string ZipReader::read_string(const ZipEntry& e) const {
  std::string s(e.size, '\0');
  read(e, s.data());
  return s;
}

// ---- writer ----

void ZipWriter::begin(const std::string& name, uint64_t n, uint32_t crc) {
  EMBER_CHECK(name.size() < 0xFFFF, "zip: entry name of ", name.size(), " bytes is too long");
  const bool z64 = force64_ || n >= 0xFFFFFFFF || pos_ >= 0xFFFFFFFF;
  std::string h;
  put32(h, kLocalSig);
  put16(h, z64 ? 45 : 20);  // version needed
  put16(h, 0x0800);         // UTF-8 names
  put16(h, 0);              // stored
  put16(h, 0);
  put16(h, 0x21);  // DOS time/date: 1980-01-01 (reproducible output)
  put32(h, crc);
  put32(h, z64 ? 0xFFFFFFFF : n);
  put32(h, z64 ? 0xFFFFFFFF : n);
  put16(h, name.size());
  const uint64_t base = pos_ + kLocalSize + name.size() + (z64 ? 20 : 0) + 4;  // data start without padding
  const uint64_t pad = (64 - base % 64) % 64;
  put16(h, (z64 ? 20 : 0) + 4 + pad);
  h += name;
  if (z64) {
    put16(h, 0x0001);
    put16(h, 16);
    put64(h, n);
    put64(h, n);
  }
  put16(h, 0x4246);  // "FB": PyTorch's padding field id
  put16(h, pad);
  h.append(pad, 'Z');
  write_bytes(f_, h.data(), h.size());
  written_.push_back({name, crc, n, pos_});
  pos_ += h.size();
}

void ZipWriter::write(const void* data, uint64_t n) {
  write_bytes(f_, data, n);
  pos_ += n;
}

void ZipWriter::add(const std::string& name, const void* data, uint64_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (uint64_t done = 0; done < n;) {
    const uint64_t k = std::min<uint64_t>(n - done, 1u << 30);
    crc = crc32(crc, static_cast<const Bytef*>(data) + done, static_cast<uInt>(k));
    done += k;
  }
  begin(name, n, static_cast<uint32_t>(crc));
  write(data, n);
}

void ZipWriter::finish() {
  const uint64_t cd_offset = pos_;
  std::string cd;
  for (const Written& w : written_) {
    const bool big = force64_ || w.size >= 0xFFFFFFFF, far = force64_ || w.offset >= 0xFFFFFFFF;
    put32(cd, kCentralSig);
    put16(cd, 45);
    put16(cd, big || far ? 45 : 20);
    put16(cd, 0x0800);
    put16(cd, 0);
    put16(cd, 0);
    put16(cd, 0x21);
    put32(cd, w.crc);
    put32(cd, big ? 0xFFFFFFFF : w.size);
    put32(cd, big ? 0xFFFFFFFF : w.size);
    put16(cd, w.name.size());
    const uint64_t extra = (big ? 16 : 0) + (far ? 8 : 0);
    put16(cd, extra ? extra + 4 : 0);
    put16(cd, 0);  // comment
    put16(cd, 0);  // disk
    put16(cd, 0);
    put32(cd, 0);
    put32(cd, far ? 0xFFFFFFFF : w.offset);
    cd += w.name;
    if (extra) {
      put16(cd, 0x0001);
      put16(cd, extra);
      if (big) {
        put64(cd, w.size);
        put64(cd, w.size);
      }
      if (far) put64(cd, w.offset);
    }
  }
  const uint64_t n = written_.size();
  const bool z64 = force64_ || n >= 0xFFFF || cd.size() >= 0xFFFFFFFF || cd_offset >= 0xFFFFFFFF;
  std::string end;
  if (z64) {
    const uint64_t e64_pos = cd_offset + cd.size();
    put32(end, kEnd64Sig);
    put64(end, kEnd64Size - 12);
    put16(end, 45);
    put16(end, 45);
    put32(end, 0);
    put32(end, 0);
    put64(end, n);
    put64(end, n);
    put64(end, cd.size());
    put64(end, cd_offset);
    put32(end, kEnd64LocatorSig);
    put32(end, 0);
    put64(end, e64_pos);
    put32(end, 1);
  }
  put32(end, kEndSig);
  put16(end, 0);
  put16(end, 0);
  put16(end, z64 ? 0xFFFF : n);
  put16(end, z64 ? 0xFFFF : n);
  put32(end, z64 ? 0xFFFFFFFF : cd.size());
  put32(end, z64 ? 0xFFFFFFFF : cd_offset);
  put16(end, 0);
  write(cd.data(), cd.size());
  write(end.data(), end.size());
}

}  // namespace ember::io::detail
