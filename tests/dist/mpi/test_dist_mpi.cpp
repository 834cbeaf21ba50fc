// ember::dist under mpirun (ctest runs it with -np 2): every collective against its definition,
// mismatched shapes, DistributedDataParallel against one process with the whole batch, no_sync, and
// the sampler's shards across real ranks. Expected values are computed here from the definitions.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <set>

#include "ember/autograd.h"
#include "ember/cuda.h"
#include "ember/data.h"
#include "ember/dist.h"
#include "ember/nn.h"
#include "ember/ops.h"
#include "ember/optim.h"
#include "test_util.h"

using namespace ember;
using ember::test::throws_with;

namespace {

dist::ProcessGroup& pg() { return dist::default_group(); }

// Rank r's element i: small integers, exact in every dtype, whose sum over ranks stays below 256 (U8).
double value(int rank, int64_t i) { return static_cast<double>((i * 7 + rank * 3 + 1) % 50); }

Tensor rank_tensor(const Shape& shape, DType dt, int rank) {
  const int64_t n = shape_numel(shape);
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = value(rank, i);
  return from_vector<double>(v, shape).to(dt);
}

std::vector<double> as_doubles(const Tensor& t) { return t.to(DType::F64).contiguous().to_vector<double>(); }

const std::vector<DType> kDTypes = {DType::F32, DType::F64, DType::I64, DType::I32, DType::U8};
// Empty, one element, odd sizes (not divisible by 2 or 3), and a few thousand.
const std::vector<Shape> kShapes = {{0}, {1}, {7}, {3, 5}, {1001}, {4, 0, 2}, {64, 33}};

}  // namespace

TEST(DistMpi, GroupMatchesTheLauncher) {
  const dist::LaunchEnvironment env = dist::launch_environment();
  EXPECT_EQ(pg().rank(), env.rank);
  EXPECT_EQ(pg().size(), env.world_size);
  EXPECT_GE(pg().size(), 2) << "run under mpirun -np 2 (or more)";
}

TEST(DistMpi, AllReduceSumAndAverage) {
  const int W = pg().size();
  for (DType dt : kDTypes)
    for (const Shape& shape : kShapes) {
      Tensor t = rank_tensor(shape, dt, pg().rank());
      pg().all_reduce(t, dist::ReduceOp::Sum);
      std::vector<double> expected(static_cast<size_t>(shape_numel(shape)), 0.0);
      for (int r = 0; r < W; ++r)
        for (size_t i = 0; i < expected.size(); ++i) expected[i] += value(r, static_cast<int64_t>(i));
      EXPECT_EQ(t.shape(), shape);
      EXPECT_EQ(as_doubles(t), expected) << dtype_name(dt) << " " << shape_str(shape);
      if (!is_floating(dt)) continue;
      Tensor a = rank_tensor(shape, dt, pg().rank());
      pg().all_reduce(a, dist::ReduceOp::Average);
      std::vector<double> got = as_doubles(a);
      for (size_t i = 0; i < expected.size(); ++i)
        EXPECT_NEAR(got[i], expected[i] / W, 1e-6 * std::abs(expected[i])) << dtype_name(dt) << " element " << i;
    }
}

TEST(DistMpi, AllReduceAsyncOverlapsSeveralTensors) {
  std::vector<Tensor> ts;
  for (int k = 0; k < 4; ++k) ts.push_back(full({100 + k}, pg().rank() + k, DType::F64));
  std::vector<std::unique_ptr<dist::Work>> works;
  for (Tensor& t : ts) works.push_back(pg().all_reduce_async(t, dist::ReduceOp::Sum));
  for (auto it = works.rbegin(); it != works.rend(); ++it) (*it)->wait();  // any order
  const int W = pg().size();
  for (int k = 0; k < 4; ++k)
    EXPECT_EQ(as_doubles(ts[k]), std::vector<double>(100 + k, W * (W - 1) / 2.0 + W * k));
}

TEST(DistMpi, BroadcastFromEveryRoot) {
  for (int root = 0; root < pg().size(); ++root)
    for (DType dt : kDTypes)
      for (const Shape& shape : kShapes) {
        Tensor t = rank_tensor(shape, dt, pg().rank());
        pg().broadcast(t, root);
        EXPECT_EQ(as_doubles(t), as_doubles(rank_tensor(shape, dt, root))) << "root " << root << " " << dtype_name(dt);
      }
}

TEST(DistMpi, AllGatherStacksEveryRanksTensor) {
  for (DType dt : kDTypes)
    for (const Shape& shape : kShapes) {
      Tensor g = pg().all_gather(rank_tensor(shape, dt, pg().rank()));
      Shape expected_shape{pg().size()};
      for (int64_t d : shape) expected_shape.push_back(d);
      ASSERT_EQ(g.shape(), expected_shape);
      for (int r = 0; r < pg().size(); ++r)
        EXPECT_EQ(as_doubles(g.select(0, r)), as_doubles(rank_tensor(shape, dt, r))) << "row " << r;
    }
  // A non-contiguous input is gathered by value.
  Tensor m = rank_tensor({3, 4}, DType::F32, pg().rank());
  Tensor g = pg().all_gather(m.t());
  EXPECT_EQ(as_doubles(g.select(0, pg().size() - 1)), as_doubles(rank_tensor({3, 4}, DType::F32, pg().size() - 1).t()));
}

TEST(DistMpi, ReduceScatterGivesEachRankItsRowsOfTheSum) {
  const int W = pg().size(), me = pg().rank();
  for (DType dt : kDTypes)
    for (int64_t rows : {0, 1, 2, 3, 5, 8}) {
      const Shape shape{rows, 3};
      Tensor out = pg().reduce_scatter(rank_tensor(shape, dt, me), dist::ReduceOp::Sum);
      // Rows split as evenly as possible, the first rows % W ranks one more.
      const int64_t count = rows / W + (me < rows % W ? 1 : 0);
      const int64_t first = me * (rows / W) + std::min<int64_t>(me, rows % W);
      ASSERT_EQ(out.shape(), (Shape{count, 3})) << rows << " rows";
      std::vector<double> expected;
      for (int64_t i = first * 3; i < (first + count) * 3; ++i) {
        double s = 0;
        for (int r = 0; r < W; ++r) s += value(r, i);
        expected.push_back(s);
      }
      EXPECT_EQ(as_doubles(out), expected) << dtype_name(dt) << " " << rows << " rows";
      if (is_floating(dt) && count > 0) {
        Tensor avg = pg().reduce_scatter(rank_tensor(shape, dt, me), dist::ReduceOp::Average);
        std::vector<double> got = as_doubles(avg);
        for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(got[i], expected[i] / W, 1e-6 * expected[i]);
      } else if (is_floating(dt)) {
        pg().reduce_scatter(rank_tensor(shape, dt, me), dist::ReduceOp::Average);  // stay in step
      }
    }
}

TEST(DistMpi, BarrierAndBadArguments) {
  pg().barrier();
  Tensor ints = zeros({3}, DType::I64);
  EXPECT_TRUE(throws_with([&] { pg().all_reduce(ints, dist::ReduceOp::Average); }, {"Average", "i64"}));
  Tensor strided = zeros({4, 4}).t();
  EXPECT_TRUE(throws_with([&] { pg().all_reduce(strided); }, {"contiguous"}));
  Tensor b = zeros({2}, DType::Bool);
  EXPECT_TRUE(throws_with([&] { pg().all_reduce(b); }, {"MPI collectives take F32, F64, I64, I32 or U8"}));
  Tensor t = zeros({2});
  EXPECT_TRUE(throws_with([&] { pg().broadcast(t, pg().size()); }, {"root"}));
  pg().barrier();  // the rejected calls exchanged nothing: the ranks are still in step
}

TEST(DistMpi, MismatchedShapesFailOnEveryRankNamingBoth) {
  // Rank r passes [3 + r]: every rank sees every header and throws the same error.
  Tensor t = zeros({3 + pg().rank()});
  EXPECT_TRUE(throws_with([&] { pg().all_reduce(t); }, {"mismatched collectives", "rank 0 called all_reduce of f32 [3]",
                                                         "rank 1 called all_reduce of f32 [4]"}));
  Tensor d = zeros({2}, pg().rank() == 0 ? DType::F32 : DType::F64);
  EXPECT_TRUE(throws_with([&] { pg().broadcast(d, 0); }, {"f32 [2]", "f64 [2]"}));
  // A different collective on each rank.
  Tensor x = ones({5});
  EXPECT_TRUE(throws_with(
      [&] {
        if (pg().rank() == 0)
          pg().all_reduce(x);
        else
          pg().broadcast(x, 0);
      },
      {"rank 0 called all_reduce", "called broadcast"}));
  // The group is still usable afterwards.
  Tensor ok = ones({2});
  pg().all_reduce(ok);
  EXPECT_EQ(as_doubles(ok), std::vector<double>(2, pg().size()));
}

namespace {

std::shared_ptr<nn::Sequential> make_mlp(uint64_t seed) {
  Generator gen(seed);
  nn::LinearOptions lo;
  lo.dtype = DType::F64;
  lo.generator = &gen;
  auto m = std::make_shared<nn::Sequential>();
  m->push_back(std::make_shared<nn::Linear>(6, 16, lo));
  m->push_back(std::make_shared<nn::ReLU>());
  m->push_back(std::make_shared<nn::Linear>(16, 16, lo));
  m->push_back(std::make_shared<nn::ReLU>());
  m->push_back(std::make_shared<nn::Linear>(16, 3, lo));
  return m;
}

// The whole data set of every step: K batches of W * B rows, the same on every rank.
struct Data {
  std::vector<Tensor> x, y;
};
Data make_data(int steps, int64_t rows) {
  Data d;
  Generator gen(1234);
  for (int k = 0; k < steps; ++k) {
    d.x.push_back(randn({rows, 6}, DType::F64, &gen));
    d.y.push_back(randint(0, 3, {rows}, DType::I64, &gen));
  }
  return d;
}

std::unique_ptr<optim::Optimizer> make_optimizer(const std::string& kind, const std::vector<Tensor>& params) {
  if (kind == "sgd") {
    optim::SGDOptions o;
    o.lr = 0.1;
    o.momentum = 0.9;
    return std::make_unique<optim::SGD>(params, o);
  }
  optim::AdamOptions o;
  o.lr = 0.01;
  return std::make_unique<optim::Adam>(params, o);
}

// Parameters after `steps` steps: data parallel (this rank's rows of each batch, DDP) or one
// process with the whole batch.
std::vector<std::vector<double>> train(const std::string& kind, bool distributed, int steps, int64_t per_rank,
                                       int64_t bucket_bytes) {
  const int W = pg().size(), me = pg().rank();
  // Each rank starts from a different initialisation: DDP must replace it with rank 0's.
  auto model = make_mlp(distributed ? 100 + me : 100);
  std::unique_ptr<dist::DistributedDataParallel> ddp;
  if (distributed) {
    dist::DdpOptions o;
    o.bucket_bytes = bucket_bytes;
    ddp = std::make_unique<dist::DistributedDataParallel>(model, pg(), o);
  }
  auto opt = make_optimizer(kind, model->parameters());
  const Data data = make_data(steps, W * per_rank);
  for (int k = 0; k < steps; ++k) {
    Tensor x = data.x[k], y = data.y[k];
    if (distributed) {
      x = x.narrow(0, me * per_rank, per_rank);
      y = y.narrow(0, me * per_rank, per_rank);
    }
    opt->zero_grad();
    Tensor loss = cross_entropy(distributed ? (*ddp)(x) : (*model)(x), y);
    loss.backward();
    opt->step();
  }
  std::vector<std::vector<double>> out;
  for (const Tensor& p : model->parameters()) out.push_back(as_doubles(p));
  return out;
}

}  // namespace

// Two ranks with batch B each against one process with batch 2B: the mean loss over 2B rows is the
// average of the ranks' mean losses, so the gradients agree up to the order of the additions (the
// GEMMs sum B rows twice instead of 2B once). In f64 those differences are ~1e-16 relative; after 8
// steps (Adam divides by sqrt(v), which passes relative differences through) they stay below 1e-12,
// so 1e-10 absolute leaves two orders of margin while any real error (a missing average, a stale
// bucket: changes of 1e-3 or more) fails.
TEST(DistDdp, MatchesOneProcessWithTheWholeBatchSgdAndAdam) {
  for (const std::string kind : {"sgd", "adam"})
    for (int64_t bucket_bytes : {int64_t{25} << 20, int64_t{512}}) {  // one bucket; several (3+ buckets)
      const auto ddp = train(kind, true, 8, 5, bucket_bytes);
      const auto ref = train(kind, false, 8, 5, bucket_bytes);
      ASSERT_EQ(ddp.size(), ref.size());
      for (size_t p = 0; p < ddp.size(); ++p)
        for (size_t i = 0; i < ddp[p].size(); ++i)
          ASSERT_NEAR(ddp[p][i], ref[p][i], 1e-10) << kind << " bucket " << bucket_bytes << " param " << p << " [" << i
                                                   << "]";
    }
}

TEST(DistDdp, BucketsFollowTheSizeLimitAndParametersAreBroadcast) {
  auto model = make_mlp(7 + pg().rank());
  dist::DdpOptions o;
  o.bucket_bytes = 16 * 16 * 8;  // exactly the middle weight: a bucket boundary at every big tensor
  dist::DistributedDataParallel ddp(model, pg(), o);
  EXPECT_GE(ddp.num_buckets(), 3u);
  // Every rank now holds rank 0's parameters: the gathered rows are equal.
  for (const Tensor& p : model->parameters()) {
    Tensor g = pg().all_gather(p.detach());
    for (int r = 1; r < pg().size(); ++r) EXPECT_EQ(as_doubles(g.select(0, r)), as_doubles(g.select(0, 0)));
  }
}

TEST(DistDdp, NoSyncAccumulatesLocallyThenAveragesTheSums) {
  const int W = pg().size(), me = pg().rank();
  const int64_t B = 4;
  auto model = make_mlp(3);
  dist::DistributedDataParallel ddp(model, pg());
  const Data data = make_data(2, W * B);  // two micro-batches
  {
    auto guard = ddp.no_sync();
    cross_entropy(ddp(data.x[0].narrow(0, me * B, B)), data.y[0].narrow(0, me * B, B)).backward();
  }
  // Nothing was communicated yet: the gradient is this rank's own. Check on the last bias against
  // a fresh local computation.
  auto local = make_mlp(3);
  cross_entropy((*local)(data.x[0].narrow(0, me * B, B)), data.y[0].narrow(0, me * B, B)).backward();
  EXPECT_EQ(as_doubles(model->parameters().back().grad()), as_doubles(local->parameters().back().grad()));
  cross_entropy(ddp(data.x[1].narrow(0, me * B, B)), data.y[1].narrow(0, me * B, B)).backward();
  // Expected: (1/W) sum over ranks r and micro-batches m of grad(mean loss of rank r's rows of m).
  auto ref = make_mlp(3);
  Tensor total;
  for (int m = 0; m < 2; ++m)
    for (int r = 0; r < W; ++r) {
      Tensor l = cross_entropy((*ref)(data.x[m].narrow(0, r * B, B)), data.y[m].narrow(0, r * B, B));
      total = total.defined() ? add(total, l) : l;
    }
  mul(total, 1.0 / W).backward();
  const auto got = model->parameters(), want = ref->parameters();
  for (size_t p = 0; p < got.size(); ++p) {
    const auto a = as_doubles(got[p].grad()), b = as_doubles(want[p].grad());
    for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-12) << "param " << p;
  }
}

TEST(DistSampler, ShardsAcrossRanksAreDisjointAndCoverTheEpoch) {
  const int W = pg().size();
  for (int64_t n : {int64_t{W * 10}, int64_t{W * 10 + 1}})
    for (bool drop_last : {false, true}) {
      data::DistributedSampler s(n, data::ShardOptions{W, pg().rank(), drop_last}, true, 99);
      Tensor mine = s.indices(2);
      Tensor all = pg().all_gather(mine);
      std::vector<int64_t> v = all.to_vector<int64_t>();
      std::set<int64_t> distinct(v.begin(), v.end());
      // Every rank holds the same number; each index at most once, except the padding of a size
      // not divisible by the world (the first n % W... wrapped positions repeat).
      EXPECT_EQ(mine.numel(), s.num_samples());
      if (n % W == 0) {
        EXPECT_EQ(distinct.size(), static_cast<size_t>(n));
        EXPECT_EQ(v.size(), static_cast<size_t>(n));
      } else if (drop_last) {
        EXPECT_EQ(v.size(), static_cast<size_t>(n / W * W));
        EXPECT_EQ(distinct.size(), v.size());  // disjoint
      } else {
        EXPECT_EQ(distinct.size(), static_cast<size_t>(n));  // covering
        EXPECT_EQ(v.size(), static_cast<size_t>((n + W - 1) / W * W));
      }
      for (int64_t i : distinct) EXPECT_TRUE(i >= 0 && i < n);
    }
}

// NCCL through the same process group, one GPU per rank (cuda:<local rank>). NCCL refuses two ranks
// on one GPU, so ctest also runs this suite alone under mpirun -np 1 (dist.mpi_nccl).
TEST(DistNccl, CollectivesOnCudaTensorsMatchTheirDefinitions) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!dist::nccl_available()) GTEST_SKIP() << "this libember was built without NCCL";
  if (pg().size() > cuda::device_count())
    GTEST_SKIP() << pg().size() << " ranks but " << cuda::device_count() << " GPU(s): NCCL needs one GPU per rank";
  const Device dev = Device::cuda(pg().local_rank());
  const int W = pg().size(), me = pg().rank();
  for (DType dt : {DType::F32, DType::F64, DType::I64, DType::I32, DType::U8})
    for (const Shape& shape : kShapes) {
      std::vector<double> sum(static_cast<size_t>(shape_numel(shape)), 0.0);
      for (int r = 0; r < W; ++r)
        for (size_t i = 0; i < sum.size(); ++i) sum[i] += value(r, static_cast<int64_t>(i));
      Tensor t = rank_tensor(shape, dt, me).to(dev);
      pg().all_reduce(t, dist::ReduceOp::Sum);
      EXPECT_EQ(t.device(), dev);
      EXPECT_EQ(as_doubles(t.cpu()), sum) << dtype_name(dt) << " " << shape_str(shape);
      if (is_floating(dt)) {
        Tensor a = rank_tensor(shape, dt, me).to(dev);
        pg().all_reduce_async(a, dist::ReduceOp::Average)->wait();
        const std::vector<double> got = as_doubles(a.cpu());
        for (size_t i = 0; i < sum.size(); ++i) EXPECT_NEAR(got[i], sum[i] / W, 1e-6 * sum[i]);
      }
      Tensor b = rank_tensor(shape, dt, me).to(dev);
      pg().broadcast(b, W - 1);
      EXPECT_EQ(as_doubles(b.cpu()), as_doubles(rank_tensor(shape, dt, W - 1)));
      Tensor g = pg().all_gather(rank_tensor(shape, dt, me).to(dev));
      for (int r = 0; r < W; ++r) EXPECT_EQ(as_doubles(g.select(0, r).cpu()), as_doubles(rank_tensor(shape, dt, r)));
    }
  for (int64_t rows : {0, 1, 3, 5}) {
    Tensor out = pg().reduce_scatter(rank_tensor({rows, 2}, DType::F32, me).to(dev), dist::ReduceOp::Sum);
    const int64_t count = rows / W + (me < rows % W ? 1 : 0);
    const int64_t first = me * (rows / W) + std::min<int64_t>(me, rows % W);
    std::vector<double> expected;
    for (int64_t i = first * 2; i < (first + count) * 2; ++i) {
      double s = 0;
      for (int r = 0; r < W; ++r) s += value(r, i);
      expected.push_back(s);
    }
    ASSERT_EQ(out.shape(), (Shape{count, 2}));
    EXPECT_EQ(as_doubles(out.cpu()), expected) << rows << " rows";
  }
}

TEST(DistNccl, DdpOnTheGpuMatchesTheCpuStep) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  if (!dist::nccl_available()) GTEST_SKIP() << "this libember was built without NCCL";
  if (pg().size() > cuda::device_count())
    GTEST_SKIP() << pg().size() << " ranks but " << cuda::device_count() << " GPU(s): NCCL needs one GPU per rank";
  // The same data-parallel SGD step on the GPU (NCCL buckets) and on the CPU (MPI buckets), in f64.
  const int W = pg().size(), me = pg().rank();
  const Data data = make_data(1, W * 4);
  std::vector<std::vector<double>> results[2];
  for (int on_gpu = 0; on_gpu < 2; ++on_gpu) {
    const Device dev = on_gpu ? Device::cuda(pg().local_rank()) : Device::cpu();
    auto model = make_mlp(11);
    model->to(dev);
    dist::DistributedDataParallel ddp(model, pg());
    auto opt = make_optimizer("sgd", model->parameters());
    cross_entropy(ddp(data.x[0].narrow(0, me * 4, 4).to(dev)), data.y[0].narrow(0, me * 4, 4).to(dev)).backward();
    opt->step();
    for (const Tensor& p : model->parameters()) results[on_gpu].push_back(as_doubles(p.cpu()));
  }
  for (size_t p = 0; p < results[0].size(); ++p)
    for (size_t i = 0; i < results[0][p].size(); ++i) ASSERT_NEAR(results[1][p][i], results[0][p][i], 1e-12);
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  dist::init();
  const int rc = RUN_ALL_TESTS();
  dist::finalize();
  return rc;
}
