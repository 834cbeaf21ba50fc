// ember::dist without NCCL (CPU-only builds, or CUDA builds that found no libnccl): CUDA tensors
// cannot take part in collectives, and saying so is all this file does.
#include "cpp/dist/nccl.h"

namespace ember::dist {

bool nccl_available() { return false; }

namespace detail {
namespace {
[[noreturn]] void no_nccl() {
  throw Error(
      "dist: collectives on CUDA tensors need NCCL, and this libember was built without it (a CPU-only build, or "
      "CMake found no libnccl/nccl.h next to the CUDA toolkit); install NCCL and reconfigure, or move the tensors "
      "to the CPU");
}
}  // namespace
size_t nccl_unique_id_bytes() { no_nccl(); }
std::vector<char> nccl_make_unique_id() { no_nccl(); }
std::unique_ptr<NcclComm> nccl_comm_create(const std::vector<char>&, int, int, int) { no_nccl(); }
}  // namespace detail

}  // namespace ember::dist
