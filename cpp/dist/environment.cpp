// ember::dist's parts that need no MPI: the launcher's environment, the group base class, row splits.
#include <cerrno>
#include <cstdlib>
#include <limits>

#include "cpp/dist/internal.h"

namespace ember::dist {
namespace {

// The integer in environment variable `name`, or `fallback` when it is unset.
int env_int(const char* name, int fallback, bool* found = nullptr) {
  const char* v = std::getenv(name);
  if (found) *found = v != nullptr;
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  EMBER_CHECK(end != v && *end == '\0' && errno == 0 && x >= 0 && x <= std::numeric_limits<int>::max(), "dist: ",
              name, "='", v, "' is not a non-negative integer; fix the launcher's environment or unset it");
  return static_cast<int>(x);
}

}  // namespace

LaunchEnvironment launch_environment() {
  LaunchEnvironment env;
  bool have_rank = false, have_size = false, have_local = false;
  const int ompi_rank = env_int("OMPI_COMM_WORLD_RANK", 0, &have_rank);
  const int ompi_size = env_int("OMPI_COMM_WORLD_SIZE", 1, &have_size);
  if (have_rank || have_size) {
    EMBER_CHECK(have_rank && have_size, "dist: OpenMPI set only one of OMPI_COMM_WORLD_RANK and OMPI_COMM_WORLD_SIZE");
    env.rank = ompi_rank;
    env.world_size = ompi_size;
    env.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", env.rank);
    env.source = "openmpi";
  } else {
    const int rank = env_int("EMBER_RANK", 0, &have_rank);
    const int size = env_int("EMBER_WORLD_SIZE", 1, &have_size);
    if (have_rank || have_size) {
      EMBER_CHECK(have_rank && have_size, "dist: set both EMBER_RANK and EMBER_WORLD_SIZE (got only ",
                  have_rank ? "EMBER_RANK" : "EMBER_WORLD_SIZE", ")");
      env.rank = rank;
      env.world_size = size;
      env.local_rank = env_int("EMBER_LOCAL_RANK", rank, &have_local);
      env.source = "ember";
    }
  }
  EMBER_CHECK(env.world_size >= 1 && env.rank < env.world_size, "dist: rank ", env.rank, " is outside world size ",
              env.world_size, " (from the ", env.source, " environment variables)");
  return env;
}

bool launched_distributed() { return launch_environment().source != "none"; }

Work::~Work() = default;

ProcessGroup::ProcessGroup(int rank, int size, int local_rank, double timeout)
    : rank_(rank), size_(size), local_rank_(local_rank), timeout_(timeout) {}
ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::set_timeout(double seconds) {
  EMBER_CHECK(seconds > 0 && seconds < 1e9, "dist: timeout ", seconds, " s, expected a positive number of seconds");
  timeout_ = seconds;
}

RowRange scatter_rows(int64_t rows, int rank, int size) {
  EMBER_CHECK(rows >= 0 && size >= 1 && rank >= 0 && rank < size, "dist: scatter_rows(", rows, ", rank ", rank,
              ", size ", size, ") out of range");
  const int64_t base = rows / size, extra = rows % size;
  RowRange r;
  r.count = base + (rank < extra ? 1 : 0);
  r.first = rank * base + std::min<int64_t>(rank, extra);
  return r;
}

namespace detail {
double default_timeout(const InitOptions& o) {
  if (o.timeout_seconds > 0) return o.timeout_seconds;
  if (const char* v = std::getenv("EMBER_DIST_TIMEOUT")) {
    char* end = nullptr;
    const double t = std::strtod(v, &end);
    EMBER_CHECK(end != v && *end == '\0' && t > 0 && t < 1e9, "dist: EMBER_DIST_TIMEOUT='", v,
                "' is not a positive number of seconds");
    return t;
  }
  return kDefaultTimeoutSeconds;
}
}  // namespace detail

}  // namespace ember::dist
