// VGG and ResNet-101 with torchvision's layout: the full-size models' state_dict keys and shapes
// equal torchvision 0.29's (tests/fixtures/pth/vgg.json, written by tools/make-fixtures.py --vgg from
// torchvision itself), and a reduced VGG with batch norm written by torch.save loads strictly and
// computes PyTorch's output.
#include <fstream>

#include <nlohmann/json.hpp>

#include "ember/models.h"
#include "ember/pth.h"
#include "test_util.h"

using namespace ember;

namespace {

std::string fixture(const std::string& name) { return std::string(EMBER_SOURCE_DIR) + "/tests/fixtures/pth/" + name; }

const nlohmann::json& torchvision_layouts() {
  static const nlohmann::json j = [] {
    std::ifstream f(fixture("vgg.json"));
    EXPECT_TRUE(f.good()) << "missing tests/fixtures/pth/vgg.json (tools/make-fixtures.py --vgg)";
    return nlohmann::json::parse(f);
  }();
  return j;
}

// The module's state_dict lists exactly torchvision's keys, in torchvision's order, with its shapes.
void expect_torchvision_layout(const nn::Module& model, const std::string& name) {
  const nlohmann::json& want = torchvision_layouts().at(name);
  const nn::StateDict sd = model.state_dict();
  ASSERT_EQ(sd.size(), want.size()) << name;
  for (size_t i = 0; i < sd.size(); ++i) {
    EXPECT_EQ(sd[i].first, want[i][0].get<std::string>()) << name << " entry " << i;
    const std::vector<int64_t> shape = want[i][1].get<std::vector<int64_t>>();
    EXPECT_EQ(sd[i].second.shape(), Shape(shape)) << name << " " << sd[i].first;
  }
}

}  // namespace

// Configuration A with batch norm and D without: both configurations and both layer patterns (each
// full-size model holds 130M+ parameters, so the other two pairings, vgg.json's vgg11 and vgg16_bn,
// are left to tools/make-fixtures.py, which checks its torch.nn rebuild of all four against torchvision).
TEST(TorchvisionLayout, Vgg11BnAndVgg16MatchTorchvision) {
  expect_torchvision_layout(*models::vgg11_bn(), "vgg11_bn");
  expect_torchvision_layout(*models::vgg16(), "vgg16");
}

TEST(TorchvisionLayout, ResNet101MatchesTorchvision) { expect_torchvision_layout(*models::resnet101(), "resnet101"); }

// A reduced VGG (features 4, pool, 8, 8, pool; batch norm; adaptive pool 8x8 -> 7x7; hidden 16)
// computes PyTorch's eval-mode output within |ember - torch| <= 1e-5 + 1e-4 |torch|.
TEST(PthFixture, VggWithBatchNormMatchesPyTorch) {
  models::VGGOptions o;
  o.features = {4, models::VGGOptions::kPool, 8, 8, models::VGGOptions::kPool};
  o.batch_norm = true;
  o.num_classes = 5;
  o.hidden = 16;
  models::VGG model(o);
  const nn::LoadResult r = model.load_state_dict(load_pth(fixture("vgg_bn.pth")), /*strict=*/true);
  EXPECT_TRUE(r.missing_keys.empty() && r.unexpected_keys.empty());
  model.eval();
  io::NamedTensors io = load_pth(fixture("vgg_bn-io.pth"));
  ASSERT_EQ(io.size(), 2u);
  Tensor y = model(io[0].second);
  EXPECT_EQ(io[1].first, "output");
  EXPECT_TRUE(test::all_close(y, io[1].second, {1e-5, 1e-4}));
}

TEST(VGG, BadOptionsAreClearErrors) {
  models::VGGOptions o;
  EXPECT_TRUE(test::throws_with([&] { models::VGG m(o); }, {"VGG: features is empty"}));
  o.features = {models::VGGOptions::kPool};
  EXPECT_TRUE(test::throws_with([&] { models::VGG m(o); }, {"only max-pools"}));
  o.features = {8, 0};
  EXPECT_TRUE(test::throws_with([&] { models::VGG m(o); }, {"width must be positive", "got 0"}));
  o.features = {4};
  o.hidden = 8;
  models::VGG m(o);
  EXPECT_TRUE(test::throws_with([&] { m(zeros({1, 1, 8, 8})); }, {"expected an input [N, 3, H, W]", "[1, 1, 8, 8]"}));
}
