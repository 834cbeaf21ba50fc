// PNG encoding of 8-bit images (for TensorBoard's image summaries), compressed with zlib.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ember::tensorboard {

// An 8-bit PNG of `height` x `width` pixels of `channels` (1 grey, 3 RGB, 4 RGBA) interleaved
// samples, row-major from the top-left: `pixels` holds height * width * channels bytes. Throws
// ember::Error on a size mismatch or a zlib failure.
std::string encode_png(const std::vector<uint8_t>& pixels, int64_t height, int64_t width, int channels);

}  // namespace ember::tensorboard
