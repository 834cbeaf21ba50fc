// libFuzzer target: the IDX reader (raw and gzip, images and labels) on arbitrary bytes.
#include "ember/data.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > ember::fuzz::kMaxInput) return -1;
  const std::string& path = ember::fuzz::write_input("idx", data, size);
  ember::fuzz::expect_only_ember_errors([&] { (void)ember::data::read_idx_images(path); });
  ember::fuzz::expect_only_ember_errors([&] { (void)ember::data::read_idx_labels(path); });
  return 0;
}
