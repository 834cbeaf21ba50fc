// ember::prune: magnitude pruning of Linear / Conv2d weights (unstructured, per layer or global, with
// masks that stay applied through further training) and structured channel pruning of Sequential
// chains into a genuinely smaller dense model.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ember/export.h"
#include "ember/nn.h"
#include "ember/tensor.h"

namespace ember::prune {

// The weights magnitude pruning acts on: every Linear and Conv2d weight under `model`, with its
// dotted name ("fc1.weight"), in module order. Biases and norm parameters are never pruned.
EMBER_API std::vector<std::pair<std::string, Tensor>> prunable_weights(nn::Module& model);

enum class Scope {
  PerLayer,  // each weight loses `amount` of its own elements
  Global,    // the smallest magnitudes over all weights together (layers end up unequally sparse)
};

// Exactly one of amount or threshold.
struct MagnitudeOptions {
  // Fraction in [0, 1]: round(amount * n) elements of smallest |w| are pruned (n: the layer's size,
  // or with Scope::Global all prunable elements together), as PyTorch's l1_unstructured. Ties in |w|
  // are broken by position (the earlier element goes first), so the result is deterministic.
  std::optional<double> amount;
  // Every element with |w| < threshold is pruned (the scope then makes no difference).
  std::optional<double> threshold;
  Scope scope = Scope::PerLayer;
};

// One masked weight: mask is 1 where the weight is kept and 0 where it was pruned (the weight's
// dtype and device).
struct EMBER_API MaskedWeight {
  std::string name;
  Tensor weight;
  Tensor mask;
  int64_t pruned() const;  // elements whose mask is 0
};

// Keeps pruned weights at zero through further training. While it lives, each masked weight's
// gradient is multiplied by its mask as it is accumulated (a post-accumulate-grad hook), so clipping
// and the optimizer's moments see no gradient there; apply() multiplies the weights by their masks
// and must run after every optimizer step, because an optimizer's state from before the pruning
// (Adam's momentum, weight decay) would otherwise move them off zero. Destroying it removes the hooks
// (the weights keep their zeros).
class EMBER_API Masks {
 public:
  explicit Masks(std::vector<MaskedWeight> entries);
  ~Masks();
  Masks(const Masks&) = delete;
  Masks& operator=(const Masks&) = delete;

  // weight *= mask for every entry, unrecorded.
  void apply() const;
  const std::vector<MaskedWeight>& entries() const { return entries_; }
  int64_t pruned() const;  // over all entries
  int64_t numel() const;
  double sparsity() const;  // pruned / numel (0 when empty)

 private:
  std::vector<MaskedWeight> entries_;
  std::vector<uint64_t> hook_ids_;
};

// Computes the masks of `options` over prunable_weights(model), zeroes the pruned weights and
// returns the Masks that keep them zero. Weights already zero count as the smallest magnitudes, so
// pruning again by a larger amount prunes further. Throws ember::Error for an amount outside [0, 1],
// a negative or non-finite threshold, both or neither given, or a model with no prunable weight.
EMBER_API std::unique_ptr<Masks> magnitude_prune(nn::Module& model, const MagnitudeOptions& options);

// Per-layer counts (of any module's parameters named *.weight of Linear / Conv2d): for reports.
struct LayerSparsity {
  std::string name;
  int64_t numel = 0;
  int64_t zeros = 0;
};
EMBER_API std::vector<LayerSparsity> weight_sparsity(nn::Module& model);

enum class Norm { L1, L2 };

struct ChannelOptions {
  double amount = 0.5;   // fraction in [0, 1) of each prunable layer's output channels removed (round)
  Norm norm = Norm::L1;  // ranks the output channels by the norm of their weight row / filter
};

// Structured pruning: returns a new, smaller nn::Sequential (the input is left unchanged) in which
// every Linear / Conv2d except the last removes round(amount * out) of its output channels — those
// whose weight has the smallest norm (ties: the later channel goes first), at least one channel kept
// — and the layer consuming them loses the matching inputs: the next Linear / Conv2d's input
// channels (through a Flatten: the channel's block of features), and a BatchNorm1d / BatchNorm2d in
// between its weight, bias and running statistics of those channels. The smaller model computes
// exactly what the original computes when the consuming layer's weights for the removed channels are
// zero.
// Supported: an nn::Sequential (the MLP, models::mnist_cnn, VGG-style stacks) whose children are
// Linear, Conv2d (groups 1), BatchNorm1d / BatchNorm2d, the activations (ReLU, LeakyReLU, Sigmoid,
// Tanh, GELU, SiLU), Dropout, Dropout2d, Identity, Flatten, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d
// and AdaptiveMaxPool2d. Anything else (a ResNet, whose residual additions tie the channels of
// several layers together; grouped convolutions; nested containers) throws ember::Error naming it.
EMBER_API std::shared_ptr<nn::Sequential> prune_channels(nn::Module& model, const ChannelOptions& options);

}  // namespace ember::prune
