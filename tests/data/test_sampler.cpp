// DistributedSampler and DataLoaderOptions::shard: PyTorch's sharding rule (rank r takes positions
// r, r + R, ... of the epoch's order, padded by wrapping or cut with drop_last), checked against that
// rule written out here, and the loader's batches against the sampler's indices.
#include <algorithm>
#include <numeric>
#include <set>

#include "ember/data.h"
#include "test_util.h"

using namespace ember;
using ember::test::throws_with;
using data::DistributedSampler;
using data::ShardOptions;

namespace {

std::vector<int64_t> loader_order(int64_t n, bool shuffle, uint64_t seed, int64_t epoch) {
  // The single-process loader's order, read from the labels of a dataset whose label i is sample i.
  std::vector<int64_t> labels(static_cast<size_t>(n));
  std::iota(labels.begin(), labels.end(), int64_t{0});
  data::TensorDataset ds(zeros({n, 2, 2}, DType::U8), from_vector<int64_t>(labels, {n}));
  data::DataLoaderOptions o;
  o.batch_size = 3;
  o.shuffle = shuffle;
  o.seed = seed;
  data::DataLoader loader(ds, o);
  loader.set_epoch(epoch);
  std::vector<int64_t> out;
  for (auto& b : loader)
    for (int64_t v : b.y.to_vector<int64_t>()) out.push_back(v);
  return out;
}

}  // namespace

TEST(DistributedSampler, ShardsFollowPyTorchsRuleForEverySizeAndWorld) {
  for (int64_t n : {0, 1, 5, 10, 11, 17})
    for (int64_t world : {1, 2, 3, 4, 7})
      for (bool drop_last : {false, true}) {
        const std::vector<int64_t> order = loader_order(n, true, 42, 3);
        ASSERT_EQ(static_cast<int64_t>(order.size()), n);
        // PyTorch: pad the order to a multiple of world by repeating it from its start (or cut it to
        // one with drop_last), then rank r takes every world-th element starting at r.
        std::vector<int64_t> padded = order;
        const int64_t total = drop_last ? n / world * world : (n + world - 1) / world * world;
        if (n > 0)
          while (static_cast<int64_t>(padded.size()) < total) padded.push_back(order[padded.size() % n]);
        padded.resize(static_cast<size_t>(total));
        std::multiset<int64_t> all;
        for (int64_t r = 0; r < world; ++r) {
          DistributedSampler sampler(n, ShardOptions{world, r, drop_last}, true, 42);
          std::vector<int64_t> expected;
          for (int64_t i = r; i < total; i += world) expected.push_back(padded[i]);
          EXPECT_EQ(sampler.num_samples(), total / world) << "n " << n << " world " << world;
          EXPECT_EQ(sampler.indices(3).to_vector<int64_t>(), expected)
              << "n " << n << " world " << world << " rank " << r << " drop_last " << drop_last;
          for (int64_t v : expected) all.insert(v);
        }
        if (!drop_last && n > 0) {
          // Every sample at least once; each appears once more only as padding (fewer than world).
          for (int64_t i = 0; i < n; ++i) EXPECT_GE(all.count(i), 1u);
          EXPECT_EQ(static_cast<int64_t>(all.size()) - n, total - n);
        }
        if (n % world == 0) {
          // No padding and nothing dropped: disjoint shards whose union is the epoch's permutation.
          EXPECT_EQ(all, std::multiset<int64_t>(order.begin(), order.end()));
          EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), all.size());
        }
      }
}

TEST(DistributedSampler, EveryEpochIsAFreshPermutationWithTheSameSeedOnEveryRank) {
  DistributedSampler r0(10, ShardOptions{2, 0, false}, true, 7), r1(10, ShardOptions{2, 1, false}, true, 7);
  for (int64_t epoch : {0, 1}) {
    std::vector<int64_t> a = r0.indices(epoch).to_vector<int64_t>(), b = r1.indices(epoch).to_vector<int64_t>();
    std::vector<int64_t> merged;
    for (size_t j = 0; j < a.size(); ++j) {
      merged.push_back(a[j]);
      merged.push_back(b[j]);
    }
    EXPECT_EQ(merged, loader_order(10, true, 7, epoch));
  }
  EXPECT_NE(r0.indices(0).to_vector<int64_t>(), r0.indices(1).to_vector<int64_t>());
}

TEST(DistributedSampler, ShardedLoaderDeliversTheSamplersIndicesInBatches) {
  const int64_t n = 23;
  std::vector<int64_t> labels(n);
  std::iota(labels.begin(), labels.end(), int64_t{100});
  data::TensorDataset ds(zeros({n, 2, 2}, DType::U8), from_vector<int64_t>(labels, {n}));
  for (bool shuffle : {false, true}) {
    data::DataLoaderOptions o;
    o.batch_size = 4;
    o.shuffle = shuffle;
    o.seed = 5;
    o.shard = ShardOptions{3, 2, false};
    data::DataLoader loader(ds, o);
    const std::vector<int64_t> idx = DistributedSampler(n, o.shard, shuffle, 5).indices(1).to_vector<int64_t>();
    EXPECT_EQ(loader.num_batches(), 2);  // 8 samples on each of 3 ranks (23 padded to 24), batches of 4
    loader.set_epoch(1);
    std::vector<int64_t> got;
    for (auto& b : loader)
      for (int64_t v : b.y.to_vector<int64_t>()) got.push_back(v - 100);
    EXPECT_EQ(got, idx);
  }
}

TEST(DistributedSampler, RejectsABadShard) {
  EXPECT_TRUE(throws_with([] { DistributedSampler(10, ShardOptions{2, 2, false}); }, {"shard rank 2 of 2"}));
  EXPECT_TRUE(throws_with([] { DistributedSampler(10, ShardOptions{0, 0, false}); }, {"num_replicas >= 1"}));
  data::DataLoaderOptions o;
  o.shard = ShardOptions{2, -1, false};
  EXPECT_TRUE(throws_with([&] { data::DataLoader(data::TensorDataset(zeros({2, 1}, DType::U8), zeros({2}, DType::I64)), o); },
                          {"DataLoader: shard rank -1"}));
}
