// ember::profiler: its counts and bytes against what the test program did, the Chrome trace read
// back with nlohmann-json (nesting, names, tracks), sessions; and the CPU allocator's statistics
// against the sizes the test allocates.
#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cpp/backend/backend.h"
#include "test_util.h"

using namespace ember;

namespace {

const profiler::Row* find_row(const profiler::Report& r, const std::string& name, const std::string& kind) {
  for (const profiler::Row& row : r.rows())
    if (row.name == name && row.kind == kind) return &row;
  return nullptr;
}

// An MLP training step (784 -> 32 -> 10, batch 8): forward, loss, backward, Adam step.
struct Mlp {
  std::shared_ptr<nn::Sequential> model = nn::sequential(
      {std::make_shared<nn::Linear>(784, 32), std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(32, 10)});
  optim::Adam opt{model->parameters(), {.lr = 1e-3}};
  Tensor x = test::uniform({8, 784}, -1, 1, DType::F32, 7);
  Tensor y = from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7});
  void step() {
    profile::Range step_range("train.step");
    Tensor loss = cross_entropy((*model)(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
};

}  // namespace

TEST(Profiler, CountsCallsAndBytesOfWhatRan) {
  const Tensor a = test::uniform({4, 5}, -1, 1, DType::F32, 1), b = test::uniform({5, 6}, -1, 1, DType::F32, 2);
  auto prof = profiler::start();
  Backend* installed = set_backend(DeviceType::CPU, nullptr);  // the session's wrapper: put back at once
  EXPECT_NE(installed, nullptr);
  set_backend(DeviceType::CPU, installed);
  std::vector<Tensor> keep;
  {
    profile::Range step("train.step");
    for (int i = 0; i < 3; ++i) keep.push_back(matmul(a, b));
  }
  prof.stop();
  const profiler::Report& r = prof.report();
  const profiler::Row* mm = find_row(r, "matmul", "op");
  const profiler::Row* gemm = find_row(r, "gemm", "primitive");
  const profiler::Row* alloc = find_row(r, "allocate", "primitive");
  const profiler::Row* step = find_row(r, "train.step", "op");
  ASSERT_TRUE(mm && gemm && alloc && step) << r.table();
  EXPECT_EQ(mm->calls, 3);
  EXPECT_EQ(gemm->calls, 3);  // contiguous operands: one GEMM and one output per matmul
  EXPECT_EQ(alloc->calls, 3);
  EXPECT_EQ(mm->allocations, 3);
  EXPECT_EQ(mm->bytes_allocated, 3 * 4 * 6 * int64_t(sizeof(float)));
  EXPECT_EQ(step->bytes_allocated, mm->bytes_allocated);
  EXPECT_EQ(step->calls, 1);
  EXPECT_EQ(r.steps(), 1);
  EXPECT_DOUBLE_EQ(step->share, 1.0);
  EXPECT_LE(mm->total_ms, step->total_ms);
  EXPECT_LE(gemm->total_ms, mm->total_ms);
  EXPECT_NEAR(mm->mean_us, mm->total_ms * 1e3 / 3, 1e-9);
  EXPECT_EQ(mm->device, "cpu");
  // Peak: at least the bytes of the three outputs live at the last allocation.
  EXPECT_GE(mm->peak_bytes, 3 * 4 * 6 * int64_t(sizeof(float)));
  // Sorted by total time, and the step first (everything is inside it).
  for (size_t i = 1; i < r.rows().size(); ++i) EXPECT_GE(r.rows()[i - 1].total_ms, r.rows()[i].total_ms);
  EXPECT_EQ(r.rows().front().name, "train.step");
  // Every gemm's parent is a matmul, every matmul's the step.
  for (const profiler::Event& e : r.events()) {
    if (e.name == "gemm") {
      ASSERT_GE(e.parent, 0);
      EXPECT_EQ(r.events()[e.parent].name, "matmul");
    }
    if (e.name == "matmul") {
      ASSERT_GE(e.parent, 0);
      EXPECT_EQ(r.events()[e.parent].name, "train.step");
    }
  }
  const std::string table = r.table();
  EXPECT_NE(table.find("matmul"), std::string::npos);
  EXPECT_NE(table.find("% step"), std::string::npos);
  // Stopped: the built-in backend is back (nothing installed to hand back), and nothing more is recorded.
  EXPECT_EQ(set_backend(DeviceType::CPU, nullptr), nullptr);
  const size_t events = r.events().size();
  (void)matmul(a, b);
  EXPECT_EQ(prof.report().events().size(), events);
}

TEST(Profiler, OneSessionAtATimeAndReportOnlyAfterStop) {
  auto prof = profiler::start();
  EXPECT_THROW((void)profiler::start(), Error);
  EXPECT_THROW((void)prof.report(), Error);
  prof.stop();
  prof.stop();  // again: nothing
  auto again = profiler::start();  // a later session is fine
  again.stop();
  EXPECT_EQ(again.report().steps(), 0);  // no step range ran: % of step is of the wall time
  EXPECT_DOUBLE_EQ(again.report().step_ms(), again.report().wall_ms());
}

TEST(Profiler, ChromeTraceNestsOpsInsideStepsInsideTheEpoch) {
  Mlp mlp;
  mlp.step();  // warm-up, unprofiled
  profile::Range epoch("train.epoch");  // open before the session starts: the trace still shows it
  auto prof = profiler::start();
  mlp.step();
  mlp.step();
  prof.stop();
  const nlohmann::json trace = nlohmann::json::parse(prof.report().chrome_trace());
  ASSERT_TRUE(trace.contains("traceEvents"));
  struct Ev {
    std::string name;
    double ts, end;
  };
  std::vector<Ev> host;
  bool named_thread = false, named_process = false;
  for (const nlohmann::json& e : trace["traceEvents"]) {
    const std::string ph = e.at("ph");
    if (ph == "M") {
      named_thread = named_thread || (e.at("name") == "thread_name" && e.at("pid") == 1 && e.at("tid") == 1);
      named_process = named_process || (e.at("name") == "process_name" && e.at("pid") == 1);
      continue;
    }
    ASSERT_EQ(ph, "X");
    ASSERT_EQ(e.at("pid"), 1) << "no CUDA here: host tracks only";
    ASSERT_EQ(e.at("tid"), 1) << "one thread ran everything";
    const double ts = e.at("ts"), dur = e.at("dur");
    ASSERT_GE(dur, 0.0);
    host.push_back({e.at("name"), ts, ts + dur});
    EXPECT_TRUE(e.at("cat") == "op" || e.at("cat") == "primitive");
  }
  EXPECT_TRUE(named_thread);
  EXPECT_TRUE(named_process);
  // Proper nesting (what Perfetto needs of one track): sorted by start (longest first on ties),
  // each event lies inside the innermost open one or after it; record each event's ancestors.
  std::stable_sort(host.begin(), host.end(), [](const Ev& a, const Ev& b) {
    return a.ts < b.ts || (a.ts == b.ts && a.end > b.end);
  });
  std::vector<const Ev*> stack;
  std::map<std::string, int> count;
  int gemm_in_step = 0, step_in_epoch = 0, backward_in_step = 0, gemms = 0;
  for (const Ev& e : host) {
    while (!stack.empty() && e.ts >= stack.back()->end) stack.pop_back();
    if (!stack.empty()) ASSERT_LE(e.end, stack.back()->end) << e.name << " overlaps " << stack.back()->name;
    auto inside = [&](const char* name) {
      return std::any_of(stack.begin(), stack.end(), [&](const Ev* s) { return s->name == name; });
    };
    ++count[e.name];
    if (e.name == "gemm") {
      ++gemms;
      gemm_in_step += inside("train.step");
    }
    if (e.name == "train.step") step_in_epoch += inside("train.epoch");
    if (e.name.size() > 9 && e.name.substr(e.name.size() - 9) == " backward") backward_in_step += inside("train.step");
    stack.push_back(&e);
  }
  EXPECT_EQ(count["train.epoch"], 1);
  EXPECT_EQ(count["train.step"], 2);
  EXPECT_EQ(step_in_epoch, 2);
  EXPECT_GT(gemms, 0);
  EXPECT_EQ(gemm_in_step, gemms);
  EXPECT_GT(backward_in_step, 0);
  for (const char* name : {"Sequential", "Linear", "cross_entropy", "cross_entropy backward", "optimizer.step",
                           "optimizer_step", "cross_entropy_forward", "allocate"})
    EXPECT_EQ(count[name] > 0, true) << name;
  EXPECT_EQ(count["optimizer.step"], 2);
  EXPECT_EQ(count["cross_entropy"], 2);
}

TEST(Profiler, WritingTheTraceToAMissingFolderSaysWhich) {
  auto prof = profiler::start();
  prof.stop();
  try {
    prof.report().write_chrome_trace("/nonexistent-folder/trace.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-folder/trace.json"), std::string::npos) << e.what();
  }
}

// ---- the CPU allocator's statistics ----

TEST(CpuMemoryStats, CountAllocationsBytesPeakCacheHitsAndFlushes) {
  const size_t old_limit = cpu_cache_limit();
  set_cpu_cache_limit(size_t(64) << 20);
  cpu_empty_cache();
  const CpuMemoryStats s0 = cpu_memory_stats();
  EXPECT_EQ(s0.cached, 0u);
  {
    Tensor small = empty({1000});  // 4000 bytes, rounded to 4032 (64-byte blocks)
    const CpuMemoryStats s1 = cpu_memory_stats();
    EXPECT_EQ(s1.allocated, s0.allocated + 4000);
    EXPECT_EQ(s1.reserved, s0.reserved + 4032);
    EXPECT_EQ(s1.num_allocs, s0.num_allocs + 1);
    EXPECT_EQ(s1.num_cache_hits, s0.num_cache_hits);
  }
  EXPECT_EQ(cpu_memory_stats().allocated, s0.allocated);
  EXPECT_EQ(cpu_memory_stats().cached, 0u) << "blocks under 1 MiB are not cached";
  reset_cpu_peak_memory_stats();
  EXPECT_EQ(cpu_memory_stats().peak_allocated, s0.allocated);
  const size_t big = size_t(3) << 20;  // 3 MiB of f32: cached when freed
  {
    Tensor a = empty({static_cast<int64_t>(big / 4)});
    Tensor b = empty({static_cast<int64_t>(big / 4)});
    Tensor c = empty({100});
    EXPECT_EQ(cpu_memory_stats().peak_allocated, s0.allocated + 2 * big + 400);
  }
  const CpuMemoryStats s2 = cpu_memory_stats();
  EXPECT_EQ(s2.allocated, s0.allocated);
  EXPECT_EQ(s2.peak_allocated, s0.allocated + 2 * big + 400);
  EXPECT_EQ(s2.cached, 2 * big);
  EXPECT_EQ(s2.reserved, s0.reserved + 2 * big);
  EXPECT_EQ(s2.num_allocs, s0.num_allocs + 4);
  {
    Tensor again = empty({static_cast<int64_t>(big / 4)});  // the same size: a cached block
    const CpuMemoryStats s3 = cpu_memory_stats();
    EXPECT_EQ(s3.num_cache_hits, s2.num_cache_hits + 1);
    EXPECT_EQ(s3.cached, big);
    EXPECT_EQ(s3.reserved, s2.reserved);
  }
  cpu_empty_cache();
  const CpuMemoryStats s4 = cpu_memory_stats();
  EXPECT_EQ(s4.cached, 0u);
  EXPECT_EQ(s4.num_cache_flushes, s2.num_cache_flushes + 1);
  EXPECT_EQ(s4.reserved, s0.reserved);
  set_cpu_cache_limit(old_limit);
}

TEST(CudaMemoryStats, CountAllocationsAndCacheFlushes) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const cuda::MemoryStats m0 = cuda::memory_stats();
  {
    Tensor t = empty({1000}, TensorOptions(DType::F32, Device::cuda()));
    const cuda::MemoryStats m1 = cuda::memory_stats();
    EXPECT_EQ(m1.allocated, m0.allocated + 4000);
    EXPECT_EQ(m1.num_allocs, m0.num_allocs + 1);
    EXPECT_GE(m1.peak_allocated, m1.allocated);
  }
  cuda::empty_cache();
  EXPECT_EQ(cuda::memory_stats().num_cache_flushes, m0.num_cache_flushes + 1);
  EXPECT_EQ(cuda::memory_stats().allocated, m0.allocated);
}

TEST(CudaProfiler, TimesPrimitivesWithEventsAndAddsAStreamTrack) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const Tensor a = test::uniform({64, 64}, -1, 1, DType::F32, 1).to(Device::cuda());
  const Tensor b = test::uniform({64, 64}, -1, 1, DType::F32, 2).to(Device::cuda());
  auto prof = profiler::start();
  {
    profile::Range step("train.step");
    for (int i = 0; i < 4; ++i) (void)matmul(a, b);
  }
  prof.stop();
  const profiler::Report& r = prof.report();
  const profiler::Row* gemm = find_row(r, "gemm", "primitive");
  ASSERT_TRUE(gemm) << r.table();
  EXPECT_EQ(gemm->device, "cuda");
  EXPECT_EQ(gemm->calls, 4);
  EXPECT_GT(gemm->total_ms, 0.0);
  const nlohmann::json trace = nlohmann::json::parse(r.chrome_trace());
  int on_stream = 0;
  for (const nlohmann::json& e : trace["traceEvents"])
    if (e.at("ph") == "X" && e.at("pid") == 2 && e.at("name") == "gemm") ++on_stream;
  EXPECT_EQ(on_stream, 4);
}
