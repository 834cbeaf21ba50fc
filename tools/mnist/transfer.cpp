// ember-mnist's transfer learning: pretrained weights into a ResNet with a fresh head, freezing,
// a lower backbone learning rate, and few labelled images per class.
#include "transfer.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>

#include "ember/io.h"
#include "ember/models.h"
#include "ember/pth.h"

namespace mnist {

using namespace ember;

void limit_per_class(const Config& cfg, data::MnistSplit& train) {
  const int64_t n = train.images.size(0), per = cfg.train_per_class;
  EMBER_CHECK(per > 0, "--train-per-class ", per, ": expected a positive count");
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(cfg.seed);
  std::shuffle(order.begin(), order.end(), rng);
  const std::vector<int64_t> labels = train.labels.to_vector<int64_t>();
  const int64_t classes = *std::max_element(labels.begin(), labels.end()) + 1;
  std::vector<int64_t> taken(static_cast<size_t>(classes), 0), keep;
  for (int64_t i : order)
    if (taken[labels[i]] < per) {
      ++taken[labels[i]];
      keep.push_back(i);
    }
  for (int64_t c = 0; c < classes; ++c)
    EMBER_CHECK(taken[c] == per, "--train-per-class ", per, ": class ", c, " has only ", taken[c], " training images");
  Shape shape = train.images.shape();
  const size_t row = static_cast<size_t>(train.images.numel() / n);
  shape[0] = static_cast<int64_t>(keep.size());
  Tensor images = empty(shape, TensorOptions(DType::U8));
  std::vector<int64_t> kept_labels;
  const auto* src = static_cast<const uint8_t*>(train.images.data_ptr());
  auto* dst = static_cast<uint8_t*>(images.data_ptr());
  for (size_t k = 0; k < keep.size(); ++k) {
    std::memcpy(dst + k * row, src + static_cast<size_t>(keep[k]) * row, row);
    kept_labels.push_back(labels[keep[k]]);
  }
  train.images = images;
  train.labels = from_vector<int64_t>(kept_labels, {static_cast<int64_t>(kept_labels.size())});
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

models::ResNet& as_resnet(nn::Module& model) {
  auto* r = dynamic_cast<models::ResNet*>(&model);
  EMBER_CHECK(r, "--pretrained: needs --model resnet (a ResNet with torchvision's names), not ", model.type_name());
  return *r;
}

}  // namespace

void apply_pretrained(const Config& cfg, nn::Module& model, bool quiet) {
  models::ResNet& net = as_resnet(model);
  io::NamedTensors file = ends_with(cfg.pretrained, ".safetensors") ? io::NamedTensors{} : load_pth(cfg.pretrained, {.half_to_f32 = true});
  if (ends_with(cfg.pretrained, ".safetensors"))
    for (auto& [name, t] : io::load_safetensors(cfg.pretrained).tensors)
      if (name.rfind("optimizer.", 0) != 0) file.emplace_back(name, std::move(t));
  nn::StateDict backbone;
  for (auto& [name, t] : file) {
    if (name.rfind("fc.", 0) == 0) continue;  // the new task's head starts fresh
    if (name == "conv1.weight" && t.dim() == 4 && t.size(1) == 3 && net.conv1->weight.size(1) == 1)
      t = sum(t.to(DType::F32), {1}, /*keepdim=*/true);  // RGB stem -> grayscale stem (see transfer.h)
    backbone.emplace_back(name, t);
  }
  nn::LoadResult r = model.load_state_dict(backbone, /*strict=*/false);
  std::vector<std::string> missing;
  for (const std::string& k : r.missing_keys)
    if (k.rfind("fc.", 0) != 0) missing.push_back(k);
  if (!missing.empty() || !r.unexpected_keys.empty()) {
    std::string msg = "--pretrained " + cfg.pretrained + ": the file does not fit --model " + cfg.model + ":";
    for (size_t i = 0; i < missing.size() && i < 10; ++i) msg += " missing '" + missing[i] + "'";
    for (size_t i = 0; i < r.unexpected_keys.size() && i < 10; ++i) msg += " unexpected '" + r.unexpected_keys[i] + "'";
    throw Error(msg + " (" + std::to_string(missing.size()) + " missing, " + std::to_string(r.unexpected_keys.size()) +
                " unexpected)");
  }
  if (cfg.freeze_backbone)
    for (auto& [name, child] : model.named_children())
      if (name != "fc") child->freeze();
  if (!quiet)
    std::printf("pretrained: %zu tensors from %s (head fc re-initialised%s)\n", backbone.size(), cfg.pretrained.c_str(),
                cfg.freeze_backbone ? ", backbone frozen" : "");
}

std::unique_ptr<optim::Optimizer> make_transfer_optimizer(const Config& cfg, nn::Module& model) {
  if (cfg.pretrained.empty()) return nullptr;
  optim::ParamGroup backbone, head;
  for (auto& [name, p] : model.named_parameters()) {
    if (!p.requires_grad()) continue;  // frozen
    (name.rfind("fc.", 0) == 0 ? head : backbone).params.push_back(p);
  }
  backbone.lr = cfg.lr * cfg.backbone_lr_scale;
  std::vector<optim::ParamGroup> groups{head};
  if (!backbone.params.empty()) groups.push_back(backbone);
  const double wd = cfg.weight_decay;
  if (cfg.optimizer == "sgd") return std::make_unique<optim::SGD>(groups, optim::SGDOptions{.lr = cfg.lr, .weight_decay = wd});
  if (cfg.optimizer == "momentum")
    return std::make_unique<optim::SGD>(groups, optim::SGDOptions{.lr = cfg.lr, .momentum = 0.9, .weight_decay = wd});
  if (cfg.optimizer == "adam") return std::make_unique<optim::Adam>(groups, optim::AdamOptions{.lr = cfg.lr, .weight_decay = wd});
  if (cfg.optimizer == "adamw") return std::make_unique<optim::AdamW>(groups, optim::AdamWOptions{.lr = cfg.lr, .weight_decay = wd});
  throw Error("--optimizer " + cfg.optimizer + ": expected sgd, momentum, adam or adamw");
}

}  // namespace mnist
