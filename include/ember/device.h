// Device: where a tensor's storage lives (the host, or one CUDA device).
#pragma once
#include <cstdint>
#include <ostream>
#include <string>

#include "ember/export.h"

namespace ember {

enum class DeviceType : int8_t { CPU, CUDA };

struct EMBER_API Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  constexpr Device() = default;
  constexpr Device(DeviceType t, int i = 0) : type(t), index(i) {}
  static constexpr Device cpu() { return Device(DeviceType::CPU, 0); }
  static constexpr Device cuda(int i = 0) { return Device(DeviceType::CUDA, i); }
  // Parses "cpu", "cuda", "cuda:1"; throws ember::Error otherwise.
  static Device parse(const std::string& text);

  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  std::string str() const;
  friend bool operator==(const Device&, const Device&) = default;
};

EMBER_API std::ostream& operator<<(std::ostream& os, const Device& d);

}  // namespace ember
