// PNG (ISO/IEC 15948): signature, IHDR, one IDAT of zlib-deflated scanlines (each with filter type
// 0, none), IEND; every chunk closed by the CRC-32 of its type and data (zlib's crc32).
#include "png.h"

#include <zlib.h>

#include "ember/error.h"

namespace ember::tensorboard {
namespace {

void put_u32(std::string& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((v >> s) & 0xFF));
}

void chunk(std::string& out, const char type[4], const std::string& data) {
  put_u32(out, static_cast<uint32_t>(data.size()));
  std::string body(type, 4);
  body += data;
  out += body;
  put_u32(out, static_cast<uint32_t>(::crc32(0L, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
}

}  // namespace

std::string encode_png(const std::vector<uint8_t>& pixels, int64_t height, int64_t width, int channels) {
  EMBER_CHECK(channels == 1 || channels == 3 || channels == 4, "encode_png: channels must be 1, 3 or 4, got ", channels);
  EMBER_CHECK(height >= 1 && width >= 1 && height <= 16384 && width <= 16384, "encode_png: ", height, "x", width,
              " pixels; each side must lie in [1, 16384]");
  const size_t row = static_cast<size_t>(width) * static_cast<size_t>(channels);
  EMBER_CHECK(pixels.size() == row * static_cast<size_t>(height), "encode_png: ", pixels.size(), " bytes for ", height,
              "x", width, "x", channels, " (expected ", row * static_cast<size_t>(height), ")");
  std::string raw;
  raw.reserve((row + 1) * static_cast<size_t>(height));
  for (int64_t y = 0; y < height; ++y) {
    raw.push_back(0);  // filter: none
    raw.append(reinterpret_cast<const char*>(pixels.data()) + static_cast<size_t>(y) * row, row);
  }
  uLongf packed_size = compressBound(static_cast<uLong>(raw.size()));
  std::string packed(packed_size, '\0');
  const int rc = compress2(reinterpret_cast<Bytef*>(packed.data()), &packed_size,
                           reinterpret_cast<const Bytef*>(raw.data()), static_cast<uLong>(raw.size()), 6);
  EMBER_CHECK(rc == Z_OK, "encode_png: zlib compress2 failed with code ", rc);
  packed.resize(packed_size);

  std::string out("\x89PNG\r\n\x1a\n", 8);
  std::string ihdr;
  put_u32(ihdr, static_cast<uint32_t>(width));
  put_u32(ihdr, static_cast<uint32_t>(height));
  const char color_type = channels == 1 ? 0 : channels == 3 ? 2 : 6;
  ihdr += std::string{8, color_type, 0, 0, 0};  // bit depth 8, deflate, adaptive filtering, no interlace
  chunk(out, "IHDR", ihdr);
  chunk(out, "IDAT", packed);
  chunk(out, "IEND", "");
  return out;
}

}  // namespace ember::tensorboard
