// libFuzzer target: the safetensors reader on arbitrary bytes.
#include "ember/io.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > ember::fuzz::kMaxInput) return -1;
  const std::string& path = ember::fuzz::write_input("safetensors", data, size);
  ember::fuzz::expect_only_ember_errors([&] { (void)ember::io::load_safetensors(path); });
  return 0;
}
