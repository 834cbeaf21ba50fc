// libFuzzer target: the .pth reader (zip container and restricted unpickler) on arbitrary bytes.
#include "ember/pth.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > ember::fuzz::kMaxInput) return -1;
  const std::string& path = ember::fuzz::write_input("pth", data, size);
  ember::fuzz::expect_only_ember_errors([&] { (void)ember::io::load_pth(path); });
  return 0;
}
