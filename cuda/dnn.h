// cuDNN for the CUDA backend: the per-device handle, and (in dnn.cpp) the conv primitives with
// their per-shape cache of descriptors and chosen algorithms.
#pragma once
#include <cudnn.h>

namespace ember::cuda {

// The device's cuDNN handle, bound to its compute stream; created on first use and kept for the
// process. Every cuDNN call in ember gets its handle here (the one place that creates handles).
cudnnHandle_t dnn_handle(int device);

}  // namespace ember::cuda
