// ember::dist in a build without MPI: init() says what it needs; nothing else can run.
#include "ember/dist.h"

namespace ember::dist {

bool mpi_available() { return false; }

std::shared_ptr<ProcessGroup> init(const InitOptions&) {
  throw Error(
      "dist: this libember was built without MPI, which distributed training needs to launch and connect the "
      "ranks; install Debian's libopenmpi-dev and openmpi-bin (tools/setup.sh does), reconfigure (CMake option "
      "EMBER_MPI=AUTO or ON finds it) and rebuild, then launch with mpirun -np N");
}
bool is_initialized() { return false; }
ProcessGroup& default_group() {
  throw Error("dist: no process group: this libember was built without MPI (see dist::init())");
}
void finalize() {}

}  // namespace ember::dist
