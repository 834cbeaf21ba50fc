// ember::quant: post-training int8 quantisation of Sequential chains of Linear / Conv2d layers, and
// their int8 inference on the CPU through oneDNN's int8 primitives (s8 weights, u8 / s8 activations,
// int32 accumulation, per-output-channel requantisation).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ember/export.h"
#include "ember/nn.h"
#include "ember/tensor.h"

namespace ember::quant {

enum class Calibration {
  MinMax,      // an activation's scale covers the largest |value| seen
  Percentile,  // ... covers the given percentile of |value| (outliers saturate)
};

struct QuantizeOptions {
  Calibration calibration = Calibration::MinMax;
  double percentile = 99.99;  // in (0, 100], for Calibration::Percentile
};

// One quantised Linear or Conv2d (with the ReLU after it, if any, fused).
//   weight_q[o, ...] = clamp(round(w[o, ...] / weight_scale[o]), -127, 127),
//       weight_scale[o] = max |w[o, ...]| / 127 (1 for an all-zero channel)
//   input x_q = clamp(round(x / input_scale), 0, 255) when input_unsigned, else (-128, 127)
//   acc[o] = sum x_q * weight_q[o]   (int32)
//   y[o] = input_scale * weight_scale[o] * acc[o] + bias[o], relu'd when relu
// and then, for a layer whose output feeds the next quantised layer, requantised to that layer's
// input (its scale and signedness); the last layer's y is the model's f32 output.
struct QuantizedLayer {
  enum class Kind { Linear, Conv2d } kind = Kind::Linear;
  std::string name;
  int64_t in = 0, out = 0;                                         // features or channels
  Int2 kernel{1, 1}, stride{1, 1}, padding{0, 0}, dilation{1, 1};  // Conv2d
  std::vector<int8_t> weight_q;                                    // [out, in (* kH * kW)], the float weight's layout
  std::vector<float> weight_scale;                                 // [out]
  std::vector<float> bias;                                         // [out] or empty
  float input_scale = 1;
  bool input_unsigned = false;
  bool relu = false;
  bool flatten_before = false;  // a Flatten of [N, C, H, W] precedes this Linear
  int64_t maxpool_after = 0;    // > 0: a MaxPool2d(k, stride k) follows (Conv2d only)
};

// A Sequential quantised for int8 inference. forward() takes what the float model took (F32
// [N, features] or [N, C, H, W]) and returns F32 logits on the input's device. Not trainable.
// On the CPU it runs oneDNN's int8 primitives; on a CUDA device (model.to(Device::cuda()) first:
// the device path's constants are non-persistent buffers, moved by Module::to) ember's int8
// primitives with cuBLASLt's int8 GEMM. Both compute the same arithmetic (quant_math.h).
class EMBER_API QuantizedSequential : public nn::Module {
 public:
  explicit QuantizedSequential(std::vector<QuantizedLayer> layers);
  ~QuantizedSequential() override;
  Tensor forward(const Tensor& input) override;
  // The device path (ember's int8 backend primitives) on the input's device, which must be the
  // model's: what forward() runs for a CUDA input. On the CPU it runs the primitives' plain
  // reference loops (slow; forward() uses oneDNN there), against which the CUDA kernels are tested.
  Tensor forward_primitives(const Tensor& input);
  std::string type_name() const override { return "QuantizedSequential"; }
  std::string extra_repr() const override;

  const std::vector<QuantizedLayer>& layers() const { return layers_; }
  // Bytes of the quantised weights, scales and biases.
  int64_t size_bytes() const;

  // safetensors: per layer "<name>.weight_q" (U8 holding weight_q + 128, i.e. uint8 with zero point
  // 128: ember has no I8 dtype), "<name>.weight_scale", "<name>.bias", "<name>.input_scale" (F32);
  // the layer kinds and geometry in the metadata ("ember.quant.layers", JSON).
  void save(const std::string& path) const;
  static std::shared_ptr<QuantizedSequential> load(const std::string& path);

 private:
  struct Impl;
  std::vector<QuantizedLayer> layers_;
  std::unique_ptr<Impl> impl_;
};

// Quantises `model` (an nn::Sequential of Linear, Conv2d, ReLU, MaxPool2d with stride = kernel and no
// padding, Flatten, Dropout and Identity; Dropout and Identity are dropped as in eval mode) with
// activation scales calibrated by running the float model in eval mode on `calibration` (batches of
// its input). Throws ember::Error for any other architecture, naming the child.
EMBER_API std::shared_ptr<QuantizedSequential> quantize(nn::Module& model, const std::vector<Tensor>& calibration,
                                                        const QuantizeOptions& options = {});

}  // namespace ember::quant
