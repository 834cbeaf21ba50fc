// Magnitude pruning with persistent masks, and structured channel pruning of Sequential chains.
// The rankings run on the host in f64 (a model's weights, once per pruning call); the masks and the
// masked weights then live where the weights live.
#include "ember/prune.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "ember/autograd.h"
#include "ember/error.h"

namespace ember::prune {
namespace {

std::vector<double> host_values(const Tensor& t) {
  return t.detach().to(DType::F64).cpu().contiguous().to_vector<double>();
}

Tensor like(const std::vector<double>& values, const Tensor& t) {
  return from_vector<double>(values, t.shape(), TensorOptions(DType::F64, Device::cpu())).to(t.dtype()).to(t.device());
}

std::string join(const std::string& prefix, const char* leaf) { return prefix.empty() ? leaf : prefix + "." + leaf; }

}  // namespace

std::vector<std::pair<std::string, Tensor>> prunable_weights(nn::Module& model) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, m] : model.named_modules()) {
    if (auto* l = dynamic_cast<nn::Linear*>(m))
      out.emplace_back(join(name, "weight"), l->weight);
    else if (auto* c = dynamic_cast<nn::Conv2d*>(m))
      out.emplace_back(join(name, "weight"), c->weight);
  }
  return out;
}

int64_t MaskedWeight::pruned() const {
  autograd::NoGradGuard no_grad;
  return mask.numel() - static_cast<int64_t>(std::llround(sum(mask).item()));
}

Masks::Masks(std::vector<MaskedWeight> entries) : entries_(std::move(entries)) {
  for (const MaskedWeight& e : entries_) {
    EMBER_CHECK(e.weight.shape() == e.mask.shape(), "prune::Masks: ", e.name, ": mask shape ",
                shape_str(e.mask.shape()), " differs from the weight's ", shape_str(e.weight.shape()));
    if (!e.weight.requires_grad() || !e.weight.is_leaf()) {
      hook_ids_.push_back(0);
      continue;
    }
    Tensor mask = e.mask;
    hook_ids_.push_back(autograd::register_post_accumulate_grad_hook(e.weight, [mask](const Tensor& leaf) {
      Tensor g = leaf.grad();
      if (g.defined()) g.copy_(mul(g, mask));
    }));
  }
  apply();
}

Masks::~Masks() {
  for (size_t i = 0; i < entries_.size(); ++i)
    if (hook_ids_[i] != 0) autograd::remove_post_accumulate_grad_hook(entries_[i].weight, hook_ids_[i]);
}

void Masks::apply() const {
  autograd::NoGradGuard no_grad;
  for (const MaskedWeight& e : entries_) {
    Tensor w = e.weight;
    w.copy_(mul(w, e.mask));
  }
}

int64_t Masks::pruned() const {
  int64_t n = 0;
  for (const MaskedWeight& e : entries_) n += e.pruned();
  return n;
}

int64_t Masks::numel() const {
  int64_t n = 0;
  for (const MaskedWeight& e : entries_) n += e.weight.numel();
  return n;
}

double Masks::sparsity() const {
  const int64_t n = numel();
  return n == 0 ? 0.0 : static_cast<double>(pruned()) / static_cast<double>(n);
}

std::unique_ptr<Masks> magnitude_prune(nn::Module& model, const MagnitudeOptions& options) {
  EMBER_CHECK(options.amount.has_value() != options.threshold.has_value(),
              "magnitude_prune: give exactly one of amount (a fraction in [0, 1]) and threshold (|w| below it is "
              "pruned); got ",
              options.amount ? "both" : "neither");
  if (options.amount)
    EMBER_CHECK(*options.amount >= 0 && *options.amount <= 1,
                "magnitude_prune: amount must be a fraction in [0, 1], got ", *options.amount);
  if (options.threshold)
    EMBER_CHECK(std::isfinite(*options.threshold) && *options.threshold >= 0,
                "magnitude_prune: threshold must be finite and >= 0, got ", *options.threshold);
  auto weights = prunable_weights(model);
  EMBER_CHECK(!weights.empty(), "magnitude_prune: the model holds no Linear or Conv2d weight to prune");

  std::vector<std::vector<double>> mags(weights.size()), keep(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    mags[i] = host_values(weights[i].second);
    for (double& v : mags[i]) v = std::fabs(v);
    keep[i].assign(mags[i].size(), 1.0);
  }
  if (options.threshold) {
    for (size_t i = 0; i < weights.size(); ++i)
      for (size_t j = 0; j < mags[i].size(); ++j)
        if (mags[i][j] < *options.threshold) keep[i][j] = 0.0;
  } else {
    // Prunes the k smallest of a set of (layer, index) positions, ordered by magnitude then position.
    auto prune_smallest = [&](std::vector<std::pair<size_t, size_t>> pos, double amount) {
      const auto k = static_cast<size_t>(std::llround(amount * static_cast<double>(pos.size())));
      std::stable_sort(pos.begin(), pos.end(),
                       [&](const auto& a, const auto& b) { return mags[a.first][a.second] < mags[b.first][b.second]; });
      for (size_t n = 0; n < k; ++n) keep[pos[n].first][pos[n].second] = 0.0;
    };
    if (options.scope == Scope::Global) {
      std::vector<std::pair<size_t, size_t>> pos;
      for (size_t i = 0; i < weights.size(); ++i)
        for (size_t j = 0; j < mags[i].size(); ++j) pos.emplace_back(i, j);
      prune_smallest(std::move(pos), *options.amount);
    } else {
      for (size_t i = 0; i < weights.size(); ++i) {
        std::vector<std::pair<size_t, size_t>> pos;
        for (size_t j = 0; j < mags[i].size(); ++j) pos.emplace_back(i, j);
        prune_smallest(std::move(pos), *options.amount);
      }
    }
  }
  std::vector<MaskedWeight> entries;
  for (size_t i = 0; i < weights.size(); ++i)
    entries.push_back({weights[i].first, weights[i].second, like(keep[i], weights[i].second)});
  return std::make_unique<Masks>(std::move(entries));
}

std::vector<LayerSparsity> weight_sparsity(nn::Module& model) {
  std::vector<LayerSparsity> out;
  autograd::NoGradGuard no_grad;
  for (auto& [name, w] : prunable_weights(model)) {
    const int64_t nonzero = static_cast<int64_t>(std::llround(sum(ne(w, 0.0).to(DType::F64)).item()));
    out.push_back({name, w.numel(), w.numel() - nonzero});
  }
  return out;
}

// ---- structured channel pruning ----
namespace {

// A fresh copy of a channel-preserving, parameter-free child; null for any other type.
std::shared_ptr<nn::Module> copy_stateless(const nn::Module& m) {
  if (dynamic_cast<const nn::ReLU*>(&m)) return std::make_shared<nn::ReLU>();
  if (auto* p = dynamic_cast<const nn::LeakyReLU*>(&m)) return std::make_shared<nn::LeakyReLU>(p->negative_slope);
  if (dynamic_cast<const nn::Sigmoid*>(&m)) return std::make_shared<nn::Sigmoid>();
  if (dynamic_cast<const nn::Tanh*>(&m)) return std::make_shared<nn::Tanh>();
  if (auto* p = dynamic_cast<const nn::GELU*>(&m)) return std::make_shared<nn::GELU>(p->approximate);
  if (dynamic_cast<const nn::SiLU*>(&m)) return std::make_shared<nn::SiLU>();
  if (auto* p = dynamic_cast<const nn::Dropout*>(&m)) return std::make_shared<nn::Dropout>(p->p, p->generator);
  if (auto* p = dynamic_cast<const nn::Dropout2d*>(&m)) return std::make_shared<nn::Dropout2d>(p->p, p->generator);
  if (dynamic_cast<const nn::Identity*>(&m)) return std::make_shared<nn::Identity>();
  if (auto* p = dynamic_cast<const nn::MaxPool2d*>(&m)) return std::make_shared<nn::MaxPool2d>(p->args);
  if (auto* p = dynamic_cast<const nn::AvgPool2d*>(&m)) return std::make_shared<nn::AvgPool2d>(p->args);
  if (auto* p = dynamic_cast<const nn::AdaptiveAvgPool2d*>(&m))
    return std::make_shared<nn::AdaptiveAvgPool2d>(p->output_size);
  if (auto* p = dynamic_cast<const nn::AdaptiveMaxPool2d*>(&m))
    return std::make_shared<nn::AdaptiveMaxPool2d>(p->output_size);
  return nullptr;
}

Tensor index_of(const std::vector<int64_t>& idx, Device device) {
  return from_vector<int64_t>(idx, Shape{static_cast<int64_t>(idx.size())}, TensorOptions(DType::I64, device));
}

// The output channels a layer keeps: all but the round(amount * n) of smallest norm, in order.
std::vector<int64_t> channels_to_keep(const Tensor& weight, const ChannelOptions& o) {
  const int64_t n = weight.size(0);
  const std::vector<double> w = host_values(weight);
  const size_t row = w.size() / static_cast<size_t>(n);
  std::vector<double> norm(static_cast<size_t>(n), 0.0);
  for (int64_t c = 0; c < n; ++c) {
    double s = 0;
    for (size_t j = 0; j < row; ++j) {
      const double v = w[static_cast<size_t>(c) * row + j];
      s += o.norm == Norm::L1 ? std::fabs(v) : v * v;
    }
    norm[static_cast<size_t>(c)] = o.norm == Norm::L1 ? s : std::sqrt(s);
  }
  const int64_t drop = std::min<int64_t>(n - 1, std::llround(o.amount * static_cast<double>(n)));
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  // Ascending norm; among equal norms the later channel first, so the earlier ones are kept.
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (norm[static_cast<size_t>(a)] != norm[static_cast<size_t>(b)])
      return norm[static_cast<size_t>(a)] < norm[static_cast<size_t>(b)];
    return a > b;
  });
  std::vector<int64_t> keep(order.begin() + drop, order.end());
  std::sort(keep.begin(), keep.end());
  return keep;
}

}  // namespace

std::shared_ptr<nn::Sequential> prune_channels(nn::Module& model, const ChannelOptions& options) {
  EMBER_CHECK(options.amount >= 0 && options.amount < 1, "prune_channels: amount must be a fraction in [0, 1), got ",
              options.amount);
  auto* seq = dynamic_cast<nn::Sequential*>(&model);
  EMBER_CHECK(seq,
              "prune_channels: structured pruning supports nn::Sequential chains (the MLP, models::mnist_cnn), "
              "not a ",
              model.type_name(),
              " (in a ResNet the residual additions tie the channels of several layers "
              "together); use magnitude_prune for unstructured pruning instead");
  const auto& children = seq->named_children();
  // Validate the whole chain before building anything.
  int64_t last_layer = -1;
  for (size_t i = 0; i < children.size(); ++i) {
    const nn::Module& m = *children[i].second;
    if (dynamic_cast<const nn::Linear*>(&m)) {
      last_layer = static_cast<int64_t>(i);
    } else if (auto* c = dynamic_cast<const nn::Conv2d*>(&m)) {
      EMBER_CHECK(c->options.groups == 1, "prune_channels: child '", children[i].first, "' is a Conv2d with groups ",
                  c->options.groups, "; only groups 1 is supported (a grouped convolution ties its channels)");
      last_layer = static_cast<int64_t>(i);
    } else if (auto* f = dynamic_cast<const nn::Flatten*>(&m)) {
      EMBER_CHECK(f->start_dim == 1 && (f->end_dim == -1 || f->end_dim == 3), "prune_channels: child '",
                  children[i].first, "' is a Flatten(", f->start_dim, ", ", f->end_dim,
                  "); only Flatten(1, -1) is supported");
    } else if (!dynamic_cast<const nn::BatchNorm*>(&m) && !copy_stateless(m)) {
      throw Error("prune_channels: child '" + children[i].first + "' is a " + m.type_name() +
                  ", which structured pruning does not support; supported children: Linear, Conv2d, BatchNorm1d/2d, "
                  "ReLU, LeakyReLU, Sigmoid, Tanh, GELU, SiLU, Dropout, Dropout2d, Identity, Flatten, MaxPool2d, "
                  "AvgPool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d");
    }
  }
  EMBER_CHECK(last_layer >= 0, "prune_channels: the Sequential holds no Linear or Conv2d");

  autograd::NoGradGuard no_grad;
  std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>> out;
  // The channels the previous layer kept (empty: all of them, as for the model's input), its
  // original count, and whether a Flatten has turned them into blocks of features since.
  std::vector<int64_t> kept;
  int64_t kept_of = 0;
  bool flattened = false;
  auto input_index = [&](int64_t in_features, Device device, const std::string& name) -> Tensor {
    if (kept.empty()) return Tensor();
    std::vector<int64_t> cols;
    if (!flattened) {
      cols = kept;
    } else {
      EMBER_CHECK(in_features % kept_of == 0, "prune_channels: '", name, "' takes ", in_features,
                  " features after a Flatten of ", kept_of, " channels, which is not a whole number per channel");
      const int64_t block = in_features / kept_of;
      for (int64_t c : kept)
        for (int64_t j = 0; j < block; ++j) cols.push_back(c * block + j);
    }
    return index_of(cols, device);
  };
  for (size_t i = 0; i < children.size(); ++i) {
    const std::string& name = children[i].first;
    nn::Module& m = *children[i].second;
    const bool prune_out = static_cast<int64_t>(i) < last_layer;
    if (auto* l = dynamic_cast<nn::Linear*>(&m)) {
      Tensor w = l->weight.detach();
      if (Tensor idx = input_index(l->in_features, w.device(), name); idx.defined()) w = index_select(w, 1, idx);
      std::vector<int64_t> keep;
      Tensor b = l->bias.defined() ? l->bias.detach() : Tensor();
      if (prune_out) {
        keep = channels_to_keep(w, options);
        Tensor idx = index_of(keep, w.device());
        w = index_select(w, 0, idx);
        if (b.defined()) b = index_select(b, 0, idx);
      }
      auto nl = std::make_shared<nn::Linear>(
          w.size(1), w.size(0), nn::LinearOptions{.bias = b.defined(), .dtype = w.dtype(), .device = w.device()});
      nl->weight.copy_(w);
      if (b.defined()) nl->bias.copy_(b);
      out.emplace_back(name, nl);
      kept = keep;
      kept_of = l->out_features;
      flattened = false;
    } else if (auto* c = dynamic_cast<nn::Conv2d*>(&m)) {
      EMBER_CHECK(!flattened, "prune_channels: '", name, "' is a Conv2d after a Flatten");
      Tensor w = c->weight.detach();
      if (Tensor idx = input_index(c->in_channels, w.device(), name); idx.defined()) w = index_select(w, 1, idx);
      std::vector<int64_t> keep;
      Tensor b = c->bias.defined() ? c->bias.detach() : Tensor();
      if (prune_out) {
        keep = channels_to_keep(w, options);
        Tensor idx = index_of(keep, w.device());
        w = index_select(w, 0, idx);
        if (b.defined()) b = index_select(b, 0, idx);
      }
      nn::ConvOptions co = c->options;
      co.bias = b.defined();
      co.dtype = w.dtype();
      co.device = w.device();
      auto nc = std::make_shared<nn::Conv2d>(w.size(1), w.size(0), c->kernel_size, co);
      nc->weight.copy_(w);
      if (b.defined()) nc->bias.copy_(b);
      out.emplace_back(name, nc);
      kept = keep;
      kept_of = c->out_channels;
    } else if (auto* bn = dynamic_cast<nn::BatchNorm*>(&m)) {
      EMBER_CHECK(!flattened, "prune_channels: '", name, "' is a ", m.type_name(), " after a Flatten");
      const int64_t n = kept.empty() ? bn->num_features : static_cast<int64_t>(kept.size());
      std::shared_ptr<nn::BatchNorm> nb;
      nn::BatchNormOptions bo = bn->options;
      if (dynamic_cast<nn::BatchNorm2d*>(bn))
        nb = std::make_shared<nn::BatchNorm2d>(n, bo);
      else
        nb = std::make_shared<nn::BatchNorm1d>(n, bo);
      auto take = [&](const Tensor& src, Tensor& dst) {
        if (!src.defined()) return;
        dst.copy_(kept.empty() ? src.detach() : index_select(src.detach(), 0, index_of(kept, src.device())));
      };
      take(bn->weight, nb->weight);
      take(bn->bias, nb->bias);
      take(bn->running_mean, nb->running_mean);
      take(bn->running_var, nb->running_var);
      if (bn->num_batches_tracked.defined()) nb->num_batches_tracked.copy_(bn->num_batches_tracked);
      nb->to(bn->weight.defined() ? bn->weight.device() : Device::cpu());
      out.emplace_back(name, nb);
    } else if (auto* f = dynamic_cast<nn::Flatten*>(&m)) {
      flattened = true;
      out.emplace_back(name, std::make_shared<nn::Flatten>(f->start_dim, f->end_dim));
    } else {
      out.emplace_back(name, copy_stateless(m));
    }
  }
  auto result = std::make_shared<nn::Sequential>(out);
  result->train(model.is_training());
  return result;
}

}  // namespace ember::prune
