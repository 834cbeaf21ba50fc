// ember-mnist's settings, as parsed from the command line.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mnist {

struct Config {
  std::string data_dir;          // --data, or resolved from --dataset
  std::string dataset = "mnist";  // mnist | fashion-mnist
  std::string model = "mlp";
  int64_t hidden = 500;
  // --model resnet: planes and BasicBlocks per stage (stage 1 at full resolution, each later one stride 2);
  // the stem's width is the first stage's.
  std::vector<int64_t> resnet_widths{16, 32, 64};
  std::vector<int64_t> resnet_blocks{2, 2, 2};
  double resnet_fc_dropout = 0.0;  // --model resnet: dropout before fc (0: none)
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
  // Model compression (issue 17; tools/mnist/compress.cpp): pruning after training, int8 evaluation.
  double prune = 0.0;             // fraction pruned after training (weights, or channels with prune_structured); 0: off
  bool prune_structured = false;  // channel pruning into a smaller dense model
  bool prune_global = false;      // unstructured: one magnitude ranking over all layers
  int64_t finetune_epochs = 1;    // fine-tuning epochs after pruning
  bool int8 = false;              // --eval: also quantise to int8 and compare with fp32
  std::string int8_calibration = "minmax";  // minmax | percentile
  int64_t int8_calibration_images = 512;
  std::string int8_save;          // where to write the int8 model (safetensors)
  // ---- CUDA graphs and --precision (issue 14) ----
  bool no_cuda_graph = false;      // --no-cuda-graph: eager steps on the GPU too
  std::string precision = "fp32";  // fp32 | tf32 (GPU: TF32 tensor cores) | bf16 | fp16 (autocast; precision.cpp)
  // ember::profiler (tools/mnist/profiling.cpp): --profile, --profile-steps FIRST:LAST, --trace FILE.json
  bool profile = false;
  std::string profile_steps;  // "FIRST:LAST" (steps counted from 1 across the run); empty: every step
  std::string trace_path;     // Chrome trace of the profiled steps
  // Training extras and TensorBoard (issue 17; tools/mnist/validation.cpp, tools/mnist/tensorboard.cpp).
  double l1 = 0.0;               // --l1: lambda * sum |w| over all parameters added to the loss
  double val_split = 0.0;        // --val-split: fraction of the training set held out (stratified, seeded)
  int64_t early_stopping = 0;    // --early-stopping: patience in epochs; 0: off
  int64_t folds = 0;             // --folds: k-fold cross-validation; 0: off
  int64_t fold_index = -1;       // set per fold by --folds (not a flag): the fold held out
  std::string tensorboard_dir;   // --tensorboard: event files written here
  double aug_scale = 0.0;        // --aug-scale: random scaling in [1 - S, 1 + S]
  int64_t aug_crop_padding = 0;  // --aug-crop-padding: random crop after padding each side by P pixels
  bool aug_hflip = false;        // --aug-hflip: random left-right mirror (off for digits)
  // Transfer learning (tools/mnist/transfer.cpp)
  std::string pretrained;          // --pretrained FILE (.pth or ember checkpoint)
  bool freeze_backbone = false;    // --freeze-backbone
  double backbone_lr_scale = 1.0;  // --backbone-lr-scale
  int64_t train_per_class = 0;     // --train-per-class N (0: every training image)
};

}  // namespace mnist
