// A rank that fails mid-training under mpirun -np 2: rank 1 throws before its all-reduce and stops
// communicating; rank 0 must fail with ember::Error naming the collective and itself within the
// timeout (EMBER_DIST_TIMEOUT, 2 s in ctest) instead of hanging. Prints FAILURE-TEST-PASSED when
// rank 0's error says so; ctest looks for that line.
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "ember/dist.h"
#include "ember/ops.h"

using namespace ember;

int main() {
  auto group = dist::init();
  Tensor t = ones({1000});
  group->all_reduce(t);  // one step that works
  const auto start = std::chrono::steady_clock::now();
  try {
    if (group->rank() == 1) throw std::runtime_error("simulated failure in rank 1's training step");
    group->all_reduce(t);
    std::printf("rank %d: the all-reduce completed without rank 1, which is wrong\n", group->rank());
    return 1;
  } catch (const Error& e) {
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string msg = e.what();
    std::printf("rank %d caught after %.1f s: %s\n", group->rank(), waited, msg.c_str());
    const bool names_it = msg.find("all_reduce") != std::string::npos && msg.find("rank 0 of 2") != std::string::npos;
    const bool in_time = waited < group->timeout_seconds() + 5;
    if (names_it && in_time) std::printf("FAILURE-TEST-PASSED\n");
    std::fflush(stdout);
    dist::finalize();  // the group is broken: this aborts the job (MPI_Abort)
    return 1;
  } catch (const std::exception& e) {
    std::printf("rank %d: %s\n", group->rank(), e.what());
    std::fflush(stdout);
    dist::finalize();
    return 1;
  }
}
