// VGG with torchvision's module names, configurations and initialisation.
#include "ember/autograd.h"
#include "ember/models.h"

namespace ember::models {

VGG::VGG(const VGGOptions& o) : options(o) {
  EMBER_CHECK(!o.features.empty(), "VGG: features is empty; give the convolutions' widths (and VGGOptions::kPool for "
              "each max-pool), e.g. vgg11()'s");
  EMBER_CHECK(o.in_channels > 0 && o.num_classes > 0 && o.pool_size > 0 && o.hidden > 0,
              "VGG: in_channels, num_classes, pool_size and hidden must be positive, got ", o.in_channels, ", ",
              o.num_classes, ", ", o.pool_size, ", ", o.hidden);
  EMBER_CHECK(o.dropout >= 0 && o.dropout < 1, "VGG: dropout must be in [0, 1), got ", o.dropout);
  features = std::make_shared<nn::Sequential>();
  int64_t channels = o.in_channels;
  bool any_conv = false;
  for (const int64_t width : o.features) {
    if (width == VGGOptions::kPool) {
      features->push_back(std::make_shared<nn::MaxPool2d>(2));
      continue;
    }
    EMBER_CHECK(width > 0, "VGG: a convolution width must be positive (or VGGOptions::kPool), got ", width);
    nn::ConvOptions co;
    co.padding = {1, 1};
    co.dtype = o.dtype;
    co.generator = o.generator;
    features->push_back(std::make_shared<nn::Conv2d>(channels, width, Int2{3, 3}, co));
    if (o.batch_norm) {
      nn::BatchNormOptions bo;
      bo.dtype = o.dtype;
      features->push_back(std::make_shared<nn::BatchNorm2d>(width, bo));
    }
    features->push_back(std::make_shared<nn::ReLU>());
    channels = width;
    any_conv = true;
  }
  EMBER_CHECK(any_conv, "VGG: features holds only max-pools; it needs at least one convolution");
  register_module("features", features);
  avgpool = register_module("avgpool", std::make_shared<nn::AdaptiveAvgPool2d>(o.pool_size));
  nn::LinearOptions lo;
  lo.dtype = o.dtype;
  lo.generator = o.generator;
  classifier = nn::sequential({std::make_shared<nn::Linear>(channels * o.pool_size * o.pool_size, o.hidden, lo),
                               std::make_shared<nn::ReLU>(), std::make_shared<nn::Dropout>(o.dropout, o.generator),
                               std::make_shared<nn::Linear>(o.hidden, o.hidden, lo), std::make_shared<nn::ReLU>(),
                               std::make_shared<nn::Dropout>(o.dropout, o.generator),
                               std::make_shared<nn::Linear>(o.hidden, o.num_classes, lo)});
  register_module("classifier", classifier);

  // torchvision's initialisation, in module order.
  autograd::NoGradGuard no_grad;
  for (auto& [name, m] : named_modules()) {
    if (auto* c = dynamic_cast<nn::Conv2d*>(m)) {
      nn::init::kaiming_normal_(c->weight, 0.0, nn::init::FanMode::FanOut, nn::init::Nonlinearity::Relu, o.generator);
      c->bias.zero_();
    } else if (auto* b = dynamic_cast<nn::BatchNorm2d*>(m)) {
      b->weight.fill_(1.0);
      b->bias.zero_();
    } else if (auto* l = dynamic_cast<nn::Linear*>(m)) {
      nn::init::normal_(l->weight, 0.0, 0.01, o.generator);
      l->bias.zero_();
    }
  }
}

Tensor VGG::forward(const Tensor& x) {
  EMBER_CHECK(x.dim() == 4 && x.size(1) == options.in_channels, "VGG: expected an input [N, ", options.in_channels,
              ", H, W], got shape ", shape_str(x.shape()));
  return (*classifier)((*avgpool)((*features)(x)).flatten(1));
}

namespace {
constexpr int64_t M = VGGOptions::kPool;
std::shared_ptr<VGG> make_vgg(VGGOptions o, std::vector<int64_t> features, bool batch_norm) {
  o.features = std::move(features);
  o.batch_norm = batch_norm;
  return std::make_shared<VGG>(o);
}
const std::vector<int64_t> kConfigA = {64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M};
const std::vector<int64_t> kConfigD = {64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M};
}  // namespace

std::shared_ptr<VGG> vgg11(VGGOptions o) { return make_vgg(std::move(o), kConfigA, false); }
std::shared_ptr<VGG> vgg11_bn(VGGOptions o) { return make_vgg(std::move(o), kConfigA, true); }
std::shared_ptr<VGG> vgg16(VGGOptions o) { return make_vgg(std::move(o), kConfigD, false); }
std::shared_ptr<VGG> vgg16_bn(VGGOptions o) { return make_vgg(std::move(o), kConfigD, true); }

}  // namespace ember::models
