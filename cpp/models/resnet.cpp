// ResNet with torchvision's module names, blocks and initialisation.
#include <cmath>

#include "ember/autograd.h"
#include "ember/models.h"

namespace ember::models {

namespace {
std::shared_ptr<nn::Conv2d> conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding, DType dt,
                                 Generator* gen = nullptr) {
  nn::ConvOptions o;
  o.stride = {stride, stride};
  o.padding = {padding, padding};
  o.bias = false;
  o.dtype = dt;
  o.generator = gen;
  return std::make_shared<nn::Conv2d>(in, out, Int2{k, k}, o);
}

std::shared_ptr<nn::BatchNorm2d> bn(int64_t c, DType dt) {
  nn::BatchNormOptions o;
  o.dtype = dt;
  return std::make_shared<nn::BatchNorm2d>(c, o);
}

Tensor shortcut(const std::shared_ptr<nn::Module>& downsample, const Tensor& x) {
  return downsample ? (*downsample)(x) : x;
}
}  // namespace

BasicBlock::BasicBlock(int64_t inplanes, int64_t planes, int64_t stride, std::shared_ptr<nn::Module> ds, DType dt) {
  conv1 = register_module("conv1", conv(inplanes, planes, 3, stride, 1, dt));
  bn1 = register_module("bn1", bn(planes, dt));
  register_module("relu", std::make_shared<nn::ReLU>());
  conv2 = register_module("conv2", conv(planes, planes, 3, 1, 1, dt));
  bn2 = register_module("bn2", bn(planes, dt));
  if (ds) downsample = register_module("downsample", std::move(ds));
}

Tensor BasicBlock::forward(const Tensor& x) {
  Tensor out = relu((*bn1)((*conv1)(x)));
  out = (*bn2)((*conv2)(out));
  return relu(add(out, shortcut(downsample, x)));
}

Bottleneck::Bottleneck(int64_t inplanes, int64_t planes, int64_t stride, std::shared_ptr<nn::Module> ds, DType dt) {
  conv1 = register_module("conv1", conv(inplanes, planes, 1, 1, 0, dt));
  bn1 = register_module("bn1", bn(planes, dt));
  conv2 = register_module("conv2", conv(planes, planes, 3, stride, 1, dt));
  bn2 = register_module("bn2", bn(planes, dt));
  conv3 = register_module("conv3", conv(planes, planes * expansion, 1, 1, 0, dt));
  bn3 = register_module("bn3", bn(planes * expansion, dt));
  register_module("relu", std::make_shared<nn::ReLU>());
  if (ds) downsample = register_module("downsample", std::move(ds));
}

Tensor Bottleneck::forward(const Tensor& x) {
  Tensor out = relu((*bn1)((*conv1)(x)));
  out = relu((*bn2)((*conv2)(out)));
  out = (*bn3)((*conv3)(out));
  return relu(add(out, shortcut(downsample, x)));
}

ResNet::ResNet(const ResNetOptions& o) : options(o) {
  EMBER_CHECK(!o.layers.empty() && o.layers.size() == o.widths.size(), "ResNet: layers (", o.layers.size(),
              " stages) and widths (", o.widths.size(), " entries) must be non-empty and of the same length");
  for (size_t i = 0; i < o.layers.size(); ++i)
    EMBER_CHECK(o.layers[i] > 0 && o.widths[i] > 0, "ResNet: stage ", i + 1, " needs a positive block count and width, got ",
                o.layers[i], " blocks of width ", o.widths[i]);
  EMBER_CHECK(o.num_classes > 0 && o.in_channels > 0, "ResNet: num_classes and in_channels must be positive, got ",
              o.num_classes, " and ", o.in_channels);
  EMBER_CHECK(o.fc_dropout >= 0.0 && o.fc_dropout < 1.0, "ResNet: fc_dropout is a probability in [0, 1), got ",
              o.fc_dropout, " (0: no dropout before fc)");
  EMBER_CHECK(o.stem_width >= 0, "ResNet: stem_width must be 0 (widths[0]) or positive, got ", o.stem_width);
  const DType dt = o.dtype;
  const int64_t expansion = o.block == BlockKind::Basic ? BasicBlock::expansion : Bottleneck::expansion;
  int64_t inplanes = o.stem_width > 0 ? o.stem_width : o.widths[0];

  if (o.stem == ResNetStem::ImageNet)
    conv1 = register_module("conv1", conv(o.in_channels, inplanes, 7, 2, 3, dt));
  else
    conv1 = register_module("conv1", conv(o.in_channels, inplanes, 3, 1, 1, dt));
  bn1 = register_module("bn1", bn(inplanes, dt));
  register_module("relu", std::make_shared<nn::ReLU>());
  if (o.stem == ResNetStem::ImageNet) {
    MaxPool2dArgs mp;
    mp.kernel_size = {3, 3};
    mp.stride = Int2{2, 2};
    mp.padding = {1, 1};
    maxpool = register_module("maxpool", std::make_shared<nn::MaxPool2d>(mp));
  }

  for (size_t s = 0; s < o.layers.size(); ++s) {
    const int64_t planes = o.widths[s];
    const int64_t stride = s == 0 ? 1 : 2;
    auto stage = std::make_shared<nn::Sequential>();
    for (int64_t b = 0; b < o.layers[s]; ++b) {
      const int64_t block_stride = b == 0 ? stride : 1;
      std::shared_ptr<nn::Module> ds;
      if (b == 0 && (stride != 1 || inplanes != planes * expansion))
        ds = nn::sequential({conv(inplanes, planes * expansion, 1, stride, 0, dt), bn(planes * expansion, dt)});
      if (o.block == BlockKind::Basic)
        stage->push_back(std::make_shared<BasicBlock>(inplanes, planes, block_stride, ds, dt));
      else
        stage->push_back(std::make_shared<Bottleneck>(inplanes, planes, block_stride, ds, dt));
      inplanes = planes * expansion;
    }
    stages.push_back(register_module("layer" + std::to_string(s + 1), stage));
  }
  avgpool = register_module("avgpool", std::make_shared<nn::AdaptiveAvgPool2d>(1));
  if (o.fc_dropout > 0) dropout = register_module("dropout", std::make_shared<nn::Dropout>(o.fc_dropout, o.generator));
  nn::LinearOptions lo;
  lo.dtype = dt;
  lo.generator = o.generator;
  fc = register_module("fc", std::make_shared<nn::Linear>(inplanes, o.num_classes, lo));

  // torchvision's initialisation, in module order.
  autograd::NoGradGuard no_grad;
  for (auto& [name, m] : named_modules()) {
    if (auto* c = dynamic_cast<nn::Conv2d*>(m))
      nn::init::kaiming_normal_(c->weight, 0.0, nn::init::FanMode::FanOut, nn::init::Nonlinearity::Relu, o.generator);
    else if (auto* b = dynamic_cast<nn::BatchNorm2d*>(m)) {
      b->weight.fill_(1.0);
      b->bias.zero_();
    }
  }
  if (o.zero_init_residual) {
    for (auto& stage : stages)
      for (const auto& [name, block] : stage->named_children()) {
        if (auto* bb = dynamic_cast<BasicBlock*>(block.get())) bb->bn2->weight.zero_();
        if (auto* bt = dynamic_cast<Bottleneck*>(block.get())) bt->bn3->weight.zero_();
      }
  }
}

Tensor ResNet::forward(const Tensor& x) {
  EMBER_CHECK(x.dim() == 4 && x.size(1) == options.in_channels, "ResNet: expected an input [N, ", options.in_channels,
              ", H, W], got shape ", shape_str(x.shape()));
  Tensor h = relu((*bn1)((*conv1)(x)));
  if (maxpool) h = (*maxpool)(h);
  for (auto& stage : stages) h = (*stage)(h);
  h = (*avgpool)(h).flatten(1);
  if (dropout) h = (*dropout)(h);
  return (*fc)(h);
}

namespace {
std::shared_ptr<ResNet> imagenet_resnet(ResNetOptions o, BlockKind block, std::vector<int64_t> layers) {
  o.block = block;
  o.layers = std::move(layers);
  o.widths = {64, 128, 256, 512};
  return std::make_shared<ResNet>(o);
}
}  // namespace

std::shared_ptr<ResNet> resnet18(ResNetOptions o) { return imagenet_resnet(std::move(o), BlockKind::Basic, {2, 2, 2, 2}); }
std::shared_ptr<ResNet> resnet34(ResNetOptions o) { return imagenet_resnet(std::move(o), BlockKind::Basic, {3, 4, 6, 3}); }
std::shared_ptr<ResNet> resnet50(ResNetOptions o) {
  return imagenet_resnet(std::move(o), BlockKind::Bottleneck, {3, 4, 6, 3});
}

std::shared_ptr<ResNet> resnet101(ResNetOptions o) {
  return imagenet_resnet(std::move(o), BlockKind::Bottleneck, {3, 4, 23, 3});
}

std::shared_ptr<nn::Sequential> mnist_cnn(int64_t rows, int64_t cols, int64_t classes) {
  EMBER_CHECK(rows >= 6 && cols >= 6, "mnist_cnn needs images of at least 6x6 pixels, got ", rows, "x", cols);
  EMBER_CHECK(classes > 0, "mnist_cnn: classes must be positive, got ", classes);
  const int64_t features = 64 * ((rows - 4) / 2) * ((cols - 4) / 2);
  return std::make_shared<nn::Sequential>(std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>>{
      {"conv1", std::make_shared<nn::Conv2d>(1, 32, 3)},
      {"relu1", std::make_shared<nn::ReLU>()},
      {"conv2", std::make_shared<nn::Conv2d>(32, 64, 3)},
      {"relu2", std::make_shared<nn::ReLU>()},
      {"pool", std::make_shared<nn::MaxPool2d>(2)},
      {"dropout1", std::make_shared<nn::Dropout>(0.25)},
      {"flatten", std::make_shared<nn::Flatten>()},
      {"fc1", std::make_shared<nn::Linear>(features, 128)},
      {"relu3", std::make_shared<nn::ReLU>()},
      {"dropout2", std::make_shared<nn::Dropout>(0.5)},
      {"fc2", std::make_shared<nn::Linear>(128, classes)},
  });
}

std::shared_ptr<ResNet> small_resnet(int64_t classes, int64_t in_channels) {
  ResNetOptions o;
  o.layers = {2, 2, 2};
  o.widths = {16, 32, 64};
  o.stem = ResNetStem::Small;
  o.in_channels = in_channels;
  o.num_classes = classes;
  return std::make_shared<ResNet>(o);
}

}  // namespace ember::models
