// ember-bench epoch (bench_epoch.cpp): a training epoch of the MNIST MLP or CNN, eager or as CUDA graphs.
#pragma once
#include <cstdint>
#include <string>

#include "ember/device.h"

struct EpochBench {
  std::string data_dir = "data/fashion-mnist";
  ember::Device device = ember::Device::cpu();
  std::string model = "mlp";       // mlp | cnn
  std::string precision = "fp32";  // fp32 | tf32
  bool cuda_graph = false;         // the step replayed as a CUDA graph (the MLP; the CNN's dropout falls back)
  int64_t hidden = 500, batch = 64;
  int epochs = 3;  // the best epoch is reported (a graph's capture is in the first)
  uint64_t seed = 1;
};

int bench_epoch(const EpochBench& b);
