// CRC-32C (Castagnoli), the checksum of TFRecord framing, and TensorFlow's masked form of it.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ember::tensorboard {

// CRC-32C of `n` bytes (reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF;
// RFC 3720's check value: crc32c("123456789") = 0xE3069283). Continue a running CRC by passing it.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
// TFRecord stores ((crc >> 15) | (crc << 17)) + 0xa282ead8: a CRC of data holding CRCs stays strong.
uint32_t masked_crc32c(const void* data, size_t n);

}  // namespace ember::tensorboard
