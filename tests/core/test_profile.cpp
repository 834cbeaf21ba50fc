// profile::Range: the names ember gives its ranges (ops, backward nodes, modules, optimizer steps,
// batches), seen through the listener; in a CUDA build the same ranges go to NVTX.
#include <mutex>
#include <string>
#include <vector>

#include "test_util.h"

using namespace ember;

namespace {

std::mutex g_mu;
std::vector<std::string> g_events;  // "+name" on open, "-" on close

void listen(const char* name) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_events.push_back(name ? std::string("+") + name : std::string("-"));
}

bool opened(const std::vector<std::string>& events, const std::string& name) {
  for (const std::string& e : events)
    if (e == "+" + name) return true;
  return false;
}

}  // namespace

TEST(Profile, OpsBackwardNodesModulesAndStepsAreNamedRanges) {
  auto model = nn::sequential({std::make_shared<nn::Linear>(4, 3), std::make_shared<nn::ReLU>(),
                               std::make_shared<nn::Linear>(3, 2)});
  optim::SGD opt(model->parameters(), {.lr = 0.1});
  data::DataLoaderOptions o;
  o.batch_size = 2;
  data::DataLoader loader(data::TensorDataset(zeros({4, 2, 2}, DType::U8), zeros({4}, DType::I64)), o);
  g_events.clear();
  profile::set_listener(&listen);
  {
    profile::Range outer("my.step");
    std::optional<data::Batch> b = loader.next();
    Tensor loss = cross_entropy((*model)(b->x), b->y);
    Tensor extra = sum(matmul(b->x, zeros({4, 1})));
    loss.backward();
    opt.step();
  }
  profile::set_listener(nullptr);
  const std::vector<std::string> ev = g_events;
  for (const char* name : {"my.step", "data.next", "Sequential", "Linear", "linear_relu", "linear", "cross_entropy",
                           "matmul", "sum", "cross_entropy backward", "optimizer.step"})
    EXPECT_TRUE(opened(ev, name)) << name;
  // A backward node of the model's first layer, whichever op recorded it.
  bool any_backward = false;
  for (const std::string& e : ev) any_backward = any_backward || (e.size() > 9 && e.substr(e.size() - 9) == " backward");
  EXPECT_TRUE(any_backward);
  // Balanced, and the outer range encloses everything.
  int depth = 0, min_depth = 1 << 30;
  for (size_t i = 0; i < ev.size(); ++i) {
    depth += ev[i] == "-" ? -1 : 1;
    if (i + 1 < ev.size()) min_depth = std::min(min_depth, depth);
  }
  EXPECT_EQ(depth, 0);
  EXPECT_EQ(ev.front(), "+my.step");
  EXPECT_GE(min_depth, 1);
  // Removed: nothing more is heard.
  const size_t n = g_events.size();
  (void)sum(ones({3}));
  EXPECT_EQ(g_events.size(), n);
}
