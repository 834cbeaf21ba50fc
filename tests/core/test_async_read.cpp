// AsyncRead (a device tensor read back without a host wait) and the CUDA transfer counters and sync
// debug mode it is checked with.
#include "test_util.h"

using namespace ember;
using ember::test::throws_with;

TEST(AsyncRead, CpuTensorIsReadyAtOnceAndKeepsItsValues) {
  AsyncRead r;
  EXPECT_FALSE(r.pending());
  EXPECT_FALSE(r.ready());
  EXPECT_TRUE(throws_with([&] { r.get(); }, {"AsyncRead::get", "start(tensor) first"}));
  Tensor t = from_vector<float>({1.5f, -2.0f, 3.25f, 4.0f}, {2, 2});
  r.start(t.transpose(0, 1));  // strided: made contiguous first
  t.fill_(0.0);               // the copy was taken at start()
  EXPECT_TRUE(r.pending());
  EXPECT_TRUE(r.ready());
  const Tensor got = r.get();
  EXPECT_FALSE(r.pending());
  EXPECT_EQ(got.shape(), (Shape{2, 2}));
  EXPECT_EQ(got.to_vector<float>(), (std::vector<float>{1.5f, 3.25f, -2.0f, 4.0f}));
  r.start(from_vector<int64_t>({7}));
  EXPECT_EQ(r.get().to_vector<int64_t>(), (std::vector<int64_t>{7}));
  EXPECT_TRUE(throws_with([&] { r.start(Tensor()); }, {"undefined"}));
}

TEST(AsyncRead, CudaTensorArrivesWithoutAWaitOrAnUpload) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device (or a CPU-only build)";
  Tensor d = arange(1000, TensorOptions(DType::F32, Device::cuda()));
  AsyncRead r;
  cuda::synchronize();
  const cuda::TransferStats before = cuda::transfer_stats();
  cuda::set_sync_debug_mode(cuda::SyncDebugMode::Error);
  r.start(mul(d, 2.0));
  const bool pending = r.pending();
  cuda::set_sync_debug_mode(cuda::SyncDebugMode::Off);
  EXPECT_TRUE(pending);
  const cuda::TransferStats after_start = cuda::transfer_stats();
  EXPECT_EQ(after_start.host_to_device_copies, before.host_to_device_copies);
  EXPECT_EQ(after_start.device_to_host_copies, before.device_to_host_copies);
  EXPECT_EQ(after_start.synchronizations, before.synchronizations);
  cuda::synchronize();
  EXPECT_TRUE(r.ready());
  const std::vector<float> v = r.get().to_vector<float>();
  ASSERT_EQ(v.size(), 1000u);
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], 2.0f * static_cast<float>(i)) << i;
}

TEST(CudaSyncDebug, BlockingReadsAreCountedAndCanBeForbidden) {
  EXPECT_EQ(cuda::sync_debug_mode(), cuda::SyncDebugMode::Off);
  if (!cuda::is_available()) {
    // Nothing crosses without a device; the mode is remembered all the same.
    const cuda::TransferStats s = cuda::transfer_stats();
    EXPECT_EQ(s.host_to_device_copies + s.device_to_host_copies + s.synchronizations, 0u);
    cuda::set_sync_debug_mode(cuda::SyncDebugMode::Warn);
    EXPECT_EQ(cuda::sync_debug_mode(), cuda::SyncDebugMode::Warn);
    cuda::set_sync_debug_mode(cuda::SyncDebugMode::Off);
    GTEST_SKIP() << "no CUDA device: the counters and the Error mode need one";
  }
  const cuda::TransferStats s0 = cuda::transfer_stats();
  Tensor d = from_vector<float>({1, 2, 3}).to(Device::cuda());
  const cuda::TransferStats s1 = cuda::transfer_stats();
  EXPECT_EQ(s1.host_to_device_copies, s0.host_to_device_copies + 1);
  EXPECT_EQ(sum(d).item<double>(), 6.0);
  const cuda::TransferStats s2 = cuda::transfer_stats();
  EXPECT_EQ(s2.device_to_host_copies, s1.device_to_host_copies + 1);
  cuda::synchronize();
  EXPECT_EQ(cuda::transfer_stats().synchronizations, s2.synchronizations + 1);
  cuda::set_sync_debug_mode(cuda::SyncDebugMode::Error);
  const bool read_throws = static_cast<bool>(throws_with([&] { (void)sum(d).item<double>(); }, {"reading 4 bytes back", "cuda:0", "SyncDebugMode::Error"}));
  const bool sync_throws = static_cast<bool>(throws_with([&] { cuda::synchronize(); }, {"synchronize()", "makes the host wait"}));
  Tensor still_fine = add(d, 1.0);  // queued work is allowed
  cuda::set_sync_debug_mode(cuda::SyncDebugMode::Off);
  EXPECT_TRUE(read_throws);
  EXPECT_TRUE(sync_throws);
  EXPECT_EQ(still_fine.cpu().to_vector<float>(), (std::vector<float>{2, 3, 4}));
}

namespace {

// Work that keeps the GPU busy for tens of milliseconds (eight 4096^3 GEMMs), so a copy queued
// behind it has surely not arrived when the host asks at once.
Tensor busy_work() {
  Generator g(3);
  const Tensor a = mul(rand({4096, 4096}, DType::F32, &g).to(Device::cuda()), 1.0 / 4096);
  Tensor last;
  for (int i = 0; i < 8; ++i) last = matmul(a, a);
  return last;
}

}  // namespace

// Polling ready() before the copy arrives gets cudaErrorNotReady from cudaEventQuery, which the
// runtime also keeps as its last error: left there, the next launch's check (cudaGetLastError)
// throws "launch of ... failed with cudaErrorNotReady" (ember-mnist polls at every progress refresh).
TEST(CudaAsyncRead, PollingBeforeArrivalLeavesNoErrorForTheNextLaunch) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device (or a CPU-only build)";
  const Tensor last = busy_work();
  AsyncRead r;
  r.start(sum(last));
  const bool arrived_at_once = r.ready();
  EXPECT_FALSE(arrived_at_once) << "the copy arrived before the first poll: queue more work before it";
  Tensor x = full({1000}, 1.0, TensorOptions(DType::F32, Device::cuda()));
  EXPECT_NO_THROW(x = add(x, 1.0));
  while (!r.ready()) {
  }
  EXPECT_NO_THROW(x = add(x, 1.0));
  const double got = r.get().item<double>(), want = sum(last).item<double>();
  EXPECT_EQ(got, want);
  EXPECT_EQ(x.cpu().to_vector<float>()[999], 3.0f);
}

// A start() that needs a bigger buffer while the previous copy is still in flight into the old one
// waits for that copy first (an event synchronisation, counted and seen by the sync debug mode),
// instead of relying on cudaFreeHost to wait for it.
TEST(CudaAsyncRead, GrowingTheBufferWaitsForTheCopyInFlight) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device (or a CPU-only build)";
  const Tensor last = busy_work();
  const Tensor big = arange(100000, TensorOptions(DType::F32, Device::cuda()));
  AsyncRead r;
  r.start(sum(last));
  const cuda::TransferStats before = cuda::transfer_stats();
  cuda::set_sync_debug_mode(cuda::SyncDebugMode::Error);
  const bool waited = static_cast<bool>(
      throws_with([&] { r.start(big); }, {"AsyncRead::start()", "copy into it is in flight", "makes the host wait"}));
  cuda::set_sync_debug_mode(cuda::SyncDebugMode::Off);
  EXPECT_TRUE(waited);
  EXPECT_EQ(cuda::transfer_stats().synchronizations, before.synchronizations);  // refused before waiting
  r.start(big);
  const std::vector<float> v = r.get().to_vector<float>();
  ASSERT_EQ(v.size(), 100000u);
  for (size_t i = 0; i < v.size(); i += 997) ASSERT_EQ(v[i], static_cast<float>(i)) << i;
}
