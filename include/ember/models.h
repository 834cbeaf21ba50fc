// ember::models: ResNet (He et al., 2016) and VGG with torchvision's layout and state_dict names
// (conv1, bn1, layer1.0.conv1, layer2.0.downsample.0, fc, ...; features.0, classifier.6), so
// torchvision weights map by name (load_pth + load_state_dict, strict).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ember/export.h"
#include "ember/nn.h"

namespace ember::models {

// Two 3×3 convolutions with batch norm and an identity (or 1×1 projection) shortcut; expansion 1.
class EMBER_API BasicBlock : public nn::Module {
 public:
  static constexpr int64_t expansion = 1;
  // downsample: the shortcut's projection (Sequential of a 1×1 conv and a BatchNorm2d) or null.
  BasicBlock(int64_t inplanes, int64_t planes, int64_t stride = 1, std::shared_ptr<nn::Module> downsample = nullptr,
             DType dtype = DType::F32);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "BasicBlock"; }

  std::shared_ptr<nn::Conv2d> conv1, conv2;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2;
  std::shared_ptr<nn::Module> downsample;
};

// 1×1 reduce, 3×3 (carrying the stride, as torchvision's v1.5), 1×1 expand to planes * 4.
class EMBER_API Bottleneck : public nn::Module {
 public:
  static constexpr int64_t expansion = 4;
  Bottleneck(int64_t inplanes, int64_t planes, int64_t stride = 1, std::shared_ptr<nn::Module> downsample = nullptr,
             DType dtype = DType::F32);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Bottleneck"; }

  std::shared_ptr<nn::Conv2d> conv1, conv2, conv3;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2, bn3;
  std::shared_ptr<nn::Module> downsample;
};

enum class BlockKind { Basic, Bottleneck };
enum class ResNetStem {
  ImageNet,  // conv1 7×7 stride 2 padding 3, bn1, relu, maxpool 3×3 stride 2 padding 1 (torchvision)
  Small,     // conv1 3×3 stride 1 padding 1, bn1, relu, no max-pool: for 28×28 or 32×32 inputs
};

struct ResNetOptions {
  BlockKind block = BlockKind::Basic;
  std::vector<int64_t> layers{2, 2, 2, 2};       // blocks per stage (layer1, layer2, ...)
  std::vector<int64_t> widths{64, 128, 256, 512};  // planes per stage; one per entry of layers
  int64_t num_classes = 1000;
  int64_t in_channels = 3;
  ResNetStem stem = ResNetStem::ImageNet;
  // The stem's width (conv1's output channels); 0: widths[0].
  int64_t stem_width = 0;
  // Zero the last BatchNorm of each residual branch, so each block starts as the identity
  // (torchvision's zero_init_residual).
  bool zero_init_residual = false;
  // Dropout with this probability on the pooled features, before fc (0: none, and no module is made,
  // so the state_dict's names are torchvision's either way: dropout has no parameters).
  double fc_dropout = 0.0;
  DType dtype = DType::F32;
  Generator* generator = nullptr;  // for the initial weights and the dropout masks; default_generator() when null
};

// conv1, bn1, relu, [maxpool], layer1 ... layerK (stage 1 stride 1, each later one stride 2),
// avgpool (adaptive to 1×1), flatten, [dropout], fc. Convolutions get kaiming_normal_(fan_out, relu), batch
// norms weight 1 and bias 0, fc PyTorch's Linear default, as torchvision.
class EMBER_API ResNet : public nn::Module {
 public:
  explicit ResNet(const ResNetOptions& options);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "ResNet"; }

  const ResNetOptions options;
  std::shared_ptr<nn::Conv2d> conv1;
  std::shared_ptr<nn::BatchNorm2d> bn1;
  std::shared_ptr<nn::MaxPool2d> maxpool;  // null with the Small stem
  std::vector<std::shared_ptr<nn::Sequential>> stages;  // layer1, layer2, ...
  std::shared_ptr<nn::AdaptiveAvgPool2d> avgpool;
  std::shared_ptr<nn::Dropout> dropout;  // null unless options.fc_dropout > 0
  std::shared_ptr<nn::Linear> fc;
};

// torchvision's ImageNet ResNets (the options' layers, widths and block set; the rest as given).
EMBER_API std::shared_ptr<ResNet> resnet18(ResNetOptions options = {});
EMBER_API std::shared_ptr<ResNet> resnet34(ResNetOptions options = {});
EMBER_API std::shared_ptr<ResNet> resnet50(ResNetOptions options = {});

EMBER_API std::shared_ptr<ResNet> resnet101(ResNetOptions options = {});

// ---- VGG (Simonyan & Zisserman, 2015) with torchvision's layout and names ----

struct VGGOptions {
  // features: output channels of each 3x3 convolution (padding 1), kPool for a 2x2 max-pool.
  static constexpr int64_t kPool = -1;
  std::vector<int64_t> features;
  bool batch_norm = false;        // Conv2d, BatchNorm2d, ReLU instead of Conv2d, ReLU
  int64_t in_channels = 3;
  int64_t num_classes = 1000;
  int64_t pool_size = 7;          // avgpool: adaptive to pool_size x pool_size
  int64_t hidden = 4096;          // the classifier's two hidden layers
  double dropout = 0.5;
  DType dtype = DType::F32;
  Generator* generator = nullptr;  // for the initial weights; default_generator() when null
};

// features (a Sequential numbered as torchvision's: features.0 the first conv, features.1 its
// BatchNorm2d or ReLU, ...), avgpool (AdaptiveAvgPool2d), flatten, classifier (Linear, ReLU,
// Dropout, Linear, ReLU, Dropout, Linear: classifier.0, .3, .6). Initialisation as torchvision's:
// convolutions kaiming_normal_(fan_out, relu) with zero bias, batch norms weight 1 and bias 0,
// linear layers N(0, 0.01) with zero bias.
class EMBER_API VGG : public nn::Module {
 public:
  explicit VGG(const VGGOptions& options);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "VGG"; }

  const VGGOptions options;
  std::shared_ptr<nn::Sequential> features;
  std::shared_ptr<nn::AdaptiveAvgPool2d> avgpool;
  std::shared_ptr<nn::Sequential> classifier;
};

// torchvision's configurations A (vgg11) and D (vgg16), without and with batch norm; the options'
// features and batch_norm are set, the rest kept.
EMBER_API std::shared_ptr<VGG> vgg11(VGGOptions options = {});
EMBER_API std::shared_ptr<VGG> vgg11_bn(VGGOptions options = {});
EMBER_API std::shared_ptr<VGG> vgg16(VGGOptions options = {});
EMBER_API std::shared_ptr<VGG> vgg16_bn(VGGOptions options = {});

// PyTorch's classic MNIST example (examples/mnist): conv1 1->32 3x3, ReLU, conv2 32->64 3x3, ReLU,
// max-pool 2, dropout1 0.25, flatten, fc1 ->128, ReLU, dropout2 0.5, fc2 128->classes, as a
// Sequential with the example's names (conv1, conv2, dropout1, dropout2, fc1, fc2). Images of
// rows x cols pixels, at least 6x6.
EMBER_API std::shared_ptr<nn::Sequential> mnist_cnn(int64_t rows = 28, int64_t cols = 28, int64_t classes = 10);
// A ResNet for small grayscale images: 3x3 stem, three stages of two BasicBlocks of widths
// 16/32/64, global average pool, fc.
EMBER_API std::shared_ptr<ResNet> small_resnet(int64_t classes = 10, int64_t in_channels = 1);

}  // namespace ember::models
