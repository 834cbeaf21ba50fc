// ember::dist without a launcher: the environment variables it reads and its errors, scatter_rows,
// and (in a build without MPI) what init() says.
#include <cstdlib>

#include "ember/dist.h"
#include "test_util.h"

using namespace ember;
using ember::test::throws_with;

namespace {

// Sets environment variables for one test and restores them afterwards.
class EnvGuard {
 public:
  EnvGuard() {
    for (const char* n : kNames) {
      const char* v = std::getenv(n);
      saved_.emplace_back(n, v ? std::optional<std::string>(v) : std::nullopt);
      unsetenv(n);
    }
  }
  ~EnvGuard() {
    for (auto& [n, v] : saved_)
      if (v)
        setenv(n, v->c_str(), 1);
      else
        unsetenv(n);
  }
  void set(const char* n, const char* v) { setenv(n, v, 1); }

 private:
  static constexpr const char* kNames[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                                           "EMBER_RANK", "EMBER_WORLD_SIZE", "EMBER_LOCAL_RANK"};
  std::vector<std::pair<const char*, std::optional<std::string>>> saved_;
};

}  // namespace

TEST(DistEnvironment, ReadsOpenMpiThenEmberVariables) {
  EnvGuard env;
  dist::LaunchEnvironment none = dist::launch_environment();
  EXPECT_EQ(none.source, "none");
  EXPECT_EQ(none.world_size, 1);
  EXPECT_FALSE(dist::launched_distributed());

  env.set("EMBER_RANK", "2");
  env.set("EMBER_WORLD_SIZE", "4");
  dist::LaunchEnvironment e = dist::launch_environment();
  EXPECT_EQ(e.source, "ember");
  EXPECT_EQ(e.rank, 2);
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.local_rank, 2);  // defaults to the rank
  env.set("EMBER_LOCAL_RANK", "0");
  EXPECT_EQ(dist::launch_environment().local_rank, 0);

  // OpenMPI's variables win over ember's.
  env.set("OMPI_COMM_WORLD_RANK", "1");
  env.set("OMPI_COMM_WORLD_SIZE", "3");
  env.set("OMPI_COMM_WORLD_LOCAL_RANK", "1");
  dist::LaunchEnvironment o = dist::launch_environment();
  EXPECT_EQ(o.source, "openmpi");
  EXPECT_EQ(o.rank, 1);
  EXPECT_EQ(o.world_size, 3);
  EXPECT_EQ(o.local_rank, 1);
  EXPECT_TRUE(dist::launched_distributed());
}

TEST(DistEnvironment, RejectsMalformedValues) {
  EnvGuard env;
  env.set("EMBER_RANK", "one");
  env.set("EMBER_WORLD_SIZE", "2");
  EXPECT_TRUE(throws_with([] { dist::launch_environment(); }, {"EMBER_RANK='one'", "not a non-negative integer"}));
  env.set("EMBER_RANK", "2");
  EXPECT_TRUE(throws_with([] { dist::launch_environment(); }, {"rank 2 is outside world size 2"}));
  env.set("EMBER_RANK", "0");
  env.set("EMBER_WORLD_SIZE", "0");
  EXPECT_TRUE(throws_with([] { dist::launch_environment(); }, {"outside world size 0"}));
  unsetenv("EMBER_WORLD_SIZE");
  EXPECT_TRUE(throws_with([] { dist::launch_environment(); }, {"set both EMBER_RANK and EMBER_WORLD_SIZE"}));
}

TEST(DistEnvironment, ScatterRowsSplitsAsEvenlyAsPossibleFirstRanksLarger) {
  for (int64_t rows : {0, 1, 2, 5, 8, 13})
    for (int size : {1, 2, 3, 5}) {
      int64_t next = 0;
      for (int r = 0; r < size; ++r) {
        const dist::RowRange rr = dist::scatter_rows(rows, r, size);
        const int64_t expected = rows / size + (r < rows % size ? 1 : 0);
        EXPECT_EQ(rr.first, next) << rows << " rows, rank " << r << " of " << size;
        EXPECT_EQ(rr.count, expected) << rows << " rows, rank " << r << " of " << size;
        next += rr.count;
      }
      EXPECT_EQ(next, rows);
    }
}

TEST(DistEnvironment, InitWithoutMpiSaysWhatToInstall) {
  if (dist::mpi_available()) GTEST_SKIP() << "this build has MPI: the mpirun tests (tests/dist/mpi) cover init()";
  EXPECT_TRUE(throws_with([] { dist::init(); }, {"built without MPI", "libopenmpi-dev"}));
}
