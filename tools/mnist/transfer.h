// ember-mnist's transfer learning: --pretrained, --freeze-backbone, --backbone-lr-scale and
// --train-per-class (few labelled images per class).
#pragma once
#include <memory>

#include "config.h"
#include "ember/data.h"
#include "ember/nn.h"
#include "ember/optim.h"

namespace mnist {

// --train-per-class N: keeps N training images of each class, drawn by a shuffle seeded with
// cfg.seed (the same images for the same seed), in shuffled order. Errors when a class has fewer.
void limit_per_class(const Config& cfg, ember::data::MnistSplit& train);

// --pretrained FILE: loads a .pth state_dict or an ember-mnist checkpoint (.safetensors; its
// optimizer entries ignored) into `model` (a ResNet), all but the head (fc.*), which stays freshly
// initialised for the new task; every other key must match by name and shape. The stem adaptation:
// a conv1 trained on 3-channel (RGB) images is summed over its input channels into the model's
// 1-channel conv1, which computes on a grayscale image exactly what the RGB one computes on the
// image repeated in R, G and B. With --freeze-backbone every module but fc is frozen
// (Module::freeze: no gradients, batch norms kept in eval mode with their pretrained statistics).
void apply_pretrained(const Config& cfg, ember::nn::Module& model, bool quiet);

// The optimizer with two parameter groups when --pretrained: the backbone's trainable parameters
// at lr * backbone_lr_scale and the head's at lr. Null without --pretrained (the trainer's usual one).
std::unique_ptr<ember::optim::Optimizer> make_transfer_optimizer(const Config& cfg, ember::nn::Module& model);

}  // namespace mnist
