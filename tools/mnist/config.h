// ember-mnist's settings, as parsed from the command line.
#pragma once
#include <cstdint>
#include <string>

namespace mnist {

struct Config {
  std::string data_dir;          // --data, or resolved from --dataset
  std::string dataset = "mnist";  // mnist | fashion-mnist
  std::string model = "mlp";
  int64_t hidden = 500;
  int64_t epochs = 10;
  int64_t batch_size = 64;
  double lr = 1e-3;
  std::string optimizer = "adam";  // sgd | momentum | adam | adamw
  double weight_decay = 0.0;
  std::string scheduler = "none";  // none | step | cosine | onecycle
  std::string device = "auto";     // auto | cpu | cuda[:i]
  uint64_t seed = 1;
  int threads = 0;                 // 0: leave the BLAS default
  std::string save_path;
  std::string resume_path;
  std::string eval_path;
  std::string metrics_out;
  double target_accuracy = -1.0;  // percent; < 0: no target
  bool augment = false;
  bool deterministic = false;
  bool quiet = false;
  bool skip_nonfinite = false;  // skip steps with a non-finite loss or gradient norm instead of stopping
  bool detect_anomaly = false;
  bool distributed = false;     // data-parallel over the ranks mpirun started (ember::dist)  // autograd anomaly mode: name the op whose output is first non-finite
  // Transfer learning (tools/mnist/transfer.cpp)
  std::string pretrained;          // --pretrained FILE (.pth or ember checkpoint)
  bool freeze_backbone = false;    // --freeze-backbone
  double backbone_lr_scale = 1.0;  // --backbone-lr-scale
  int64_t train_per_class = 0;     // --train-per-class N (0: every training image)
};

}  // namespace mnist
