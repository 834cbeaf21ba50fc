// libFuzzer target: load_checkpoint (safetensors, then the metadata's JSON, then restoring a model,
// an optimizer and a scheduler) on arbitrary bytes.
#include "fuzz_input.h"
#include "fuzz_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > ember::fuzz::kMaxInput) return -1;
  static ember::fuzz::CheckpointObjects objects;
  const std::string& path = ember::fuzz::write_input("checkpoint", data, size);
  ember::Generator generator(1);
  ember::fuzz::expect_only_ember_errors([&] {
    (void)ember::load_checkpoint(path, *objects.model, *objects.opt, objects.sched.get(), generator);
  });
  return 0;
}
