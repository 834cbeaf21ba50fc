// Post-training int8 quantisation: calibration of a float Sequential, int8 inference through oneDNN's
// int8 convolution / inner product / pooling (activations NHWC u8 or s8, weights s8 in the layout the
// primitive picks, int32 accumulation, per-channel output scales), and the safetensors form.
#include "ember/quant.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

#include "cpp/backend/backend.h"
#include "cpp/backend/cpu/dnnl_common.h"  // the CPU backend's oneDNN engine
#include "cpp/backend/quant_math.h"
#include "cpp/core/tensor_impl.h"
#include "cpp/io/json_limits.h"
#include "ember/autograd.h"
#include "ember/error.h"
#include "ember/io.h"
#include "ember/ops.h"

namespace ember::quant {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

dt act_type(bool is_unsigned) { return is_unsigned ? dt::u8 : dt::s8; }

int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  EMBER_CHECK(!__builtin_mul_overflow(a, b, &r), "quantize: the size of ", what, " overflows int64 (", a, " x ", b,
              ")");
  return r;
}

int64_t conv_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

int64_t round_up16(int64_t v) { return (v + 15) / 16 * 16; }

// A layer's per-channel output scales and bias (the bias divided by the accumulator's scale, since
// oneDNN adds an int8 primitive's bias to the int32 accumulator before the output scale), for the
// next layer's input scale (1 after the last). One computation for the oneDNN path and the device
// path, so both start from the same f32 constants.
struct OutputConstants {
  std::vector<float> scale, bias_div;
};
OutputConstants output_constants(const QuantizedLayer& l, const QuantizedLayer* next) {
  const float next_scale = next ? next->input_scale : 1.0f;
  OutputConstants c{std::vector<float>(static_cast<size_t>(l.out)),
                    std::vector<float>(static_cast<size_t>(l.out), 0.0f)};
  for (int64_t o = 0; o < l.out; ++o) {
    const float acc_scale = l.input_scale * l.weight_scale[static_cast<size_t>(o)];
    c.scale[static_cast<size_t>(o)] = acc_scale / next_scale;
    if (!l.bias.empty()) c.bias_div[static_cast<size_t>(o)] = l.bias[static_cast<size_t>(o)] / acc_scale;
  }
  return c;
}

}  // namespace

// Per batch shape: the primitives, the weights in their chosen layouts and the activations between.
struct QuantizedSequential::Impl {
  struct Step {
    dnnl::primitive prim;
    std::unordered_map<int, memory> args;
  };
  struct Plan {
    memory input;  // the caller's f32 tensor (handle set per call)
    std::vector<Step> steps;
    memory output;
    Shape output_shape;
  };
  std::mutex mutex;
  std::map<Shape, Plan> plans;
  // The device path's constants per layer (registered as non-persistent buffers, so that
  // Module::to moves them): the weight bytes as GEMM operand [n_pad, k_pad] (columns in the order
  // of the NHWC activations, zero padding), the u8 inputs' compensation, bias_div and scale [n_pad].
  struct DeviceLayer {
    Tensor weight, comp, bias_div, scale;
    int64_t k = 0, k_pad = 0, n_pad = 0;
  };
  std::vector<DeviceLayer> device;
};

QuantizedSequential::QuantizedSequential(std::vector<QuantizedLayer> layers)
    : layers_(std::move(layers)), impl_(std::make_unique<Impl>()) {
  EMBER_CHECK(!layers_.empty(), "QuantizedSequential: no layers");
  for (size_t i = 0; i < layers_.size(); ++i) {
    const QuantizedLayer& l = layers_[i];
    const int64_t row = l.kind == QuantizedLayer::Kind::Conv2d
                            ? checked_mul(checked_mul(l.in, l.kernel[0], "a weight"), l.kernel[1], "a weight")
                            : l.in;
    EMBER_CHECK(l.in > 0 && l.out > 0 &&
                    static_cast<int64_t>(l.weight_q.size()) == checked_mul(l.out, row, "a weight") &&
                    static_cast<int64_t>(l.weight_scale.size()) == l.out &&
                    (l.bias.empty() || static_cast<int64_t>(l.bias.size()) == l.out),
                "QuantizedSequential: layer '", l.name, "' has inconsistent sizes (in ", l.in, ", out ", l.out,
                ", weight ", l.weight_q.size(), ", scales ", l.weight_scale.size(), ", bias ", l.bias.size(), ")");
    // Each int32 accumulator sums `row` products of at most 255 * 127 in magnitude.
    EMBER_CHECK(row <= INT32_MAX / (255 * 127), "QuantizedSequential: layer '", l.name, "' sums ", row,
                " products per output, more than the ", INT32_MAX / (255 * 127),
                " that an int32 accumulator holds without overflow; keep that layer in float");
    EMBER_CHECK(std::isfinite(l.input_scale) && l.input_scale > 0, "QuantizedSequential: layer '", l.name,
                "' has input scale ", l.input_scale, "; expected a positive finite number");
    for (float s : l.weight_scale)
      EMBER_CHECK(std::isfinite(s) && s > 0, "QuantizedSequential: layer '", l.name, "' has a weight scale ", s,
                  "; expected positive finite scales");
    EMBER_CHECK(l.maxpool_after == 0 || l.kind == QuantizedLayer::Kind::Conv2d, "QuantizedSequential: layer '", l.name,
                "' is a Linear followed by a max-pool");
    EMBER_CHECK(!l.flatten_before || l.kind == QuantizedLayer::Kind::Linear, "QuantizedSequential: layer '", l.name,
                "' is a Conv2d after a Flatten");
    if (i > 0) {
      const QuantizedLayer& p = layers_[i - 1];
      EMBER_CHECK(p.out == l.in || l.flatten_before, "QuantizedSequential: layer '", p.name, "' gives ", p.out,
                  " channels but '", l.name, "' takes ", l.in);
    }
  }
  // The device path's constants (CPU tensors until the model moves).
  const TensorOptions on_cpu(DType::F32, Device::cpu());
  for (size_t i = 0; i < layers_.size(); ++i) {
    const QuantizedLayer& l = layers_[i];
    Impl::DeviceLayer d;
    const bool conv = l.kind == QuantizedLayer::Kind::Conv2d;
    d.k = conv ? l.in * l.kernel[0] * l.kernel[1] : l.in;
    d.k_pad = round_up16(d.k);
    d.n_pad = round_up16(l.out);
    std::vector<uint8_t> w(static_cast<size_t>(checked_mul(d.n_pad, d.k_pad, "a padded weight")), 0);
    // A Linear after a Flatten of a Conv2d's output reads the NHWC activation: its columns go from
    // the (c, h, w) order of a Flatten of NCHW to (h, w, c), as on the oneDNN path.
    const int64_t prev_c =
        i > 0 && l.flatten_before && layers_[i - 1].kind == QuantizedLayer::Kind::Conv2d ? layers_[i - 1].out : 0;
    const int64_t hw = prev_c > 0 && l.in % prev_c == 0 ? l.in / prev_c : 0;
    const int64_t taps = conv ? l.kernel[0] * l.kernel[1] : 1;
    std::vector<int32_t> comp(static_cast<size_t>(d.n_pad), 0);
    for (int64_t o = 0; o < l.out; ++o) {
      int64_t sum = 0;
      for (int64_t j = 0; j < d.k; ++j) {
        const int8_t q = l.weight_q[static_cast<size_t>(o * d.k + j)];
        int64_t col = j;
        if (conv)
          col = (j % taps) * l.in + j / taps;  // (c, i, j) -> ((i * kW + j) * C + c)
        else if (hw > 0)
          col = (j % hw) * prev_c + j / hw;  // (c, p) -> (p * C + c)
        w[static_cast<size_t>(o * d.k_pad + col)] = static_cast<uint8_t>(q);
        sum += q;
      }
      // A u8 code q travels as the s8 byte q - 128 (quant_math.h), so the GEMM's sum lacks
      // 128 * sum_k w[o, k]; |that| <= 128 * 127 * k, within int32 by the accumulator check above.
      if (l.input_unsigned) comp[static_cast<size_t>(o)] = static_cast<int32_t>(128 * sum);
    }
    const OutputConstants c = output_constants(l, i + 1 < layers_.size() ? &layers_[i + 1] : nullptr);
    std::vector<float> scale(static_cast<size_t>(d.n_pad), 0.0f), bias_div(static_cast<size_t>(d.n_pad), 0.0f);
    std::copy(c.scale.begin(), c.scale.end(), scale.begin());
    std::copy(c.bias_div.begin(), c.bias_div.end(), bias_div.begin());
    const std::string tag = "layer" + std::to_string(i);
    d.weight = register_buffer(
        tag + "_weight_gemm", from_vector<uint8_t>(w, Shape{d.n_pad, d.k_pad}, TensorOptions(DType::U8, Device::cpu())),
        false);
    d.comp =
        register_buffer(tag + "_compensation",
                        from_vector<int32_t>(comp, Shape{d.n_pad}, TensorOptions(DType::I32, Device::cpu())), false);
    d.bias_div = register_buffer(tag + "_bias_div", from_vector<float>(bias_div, Shape{d.n_pad}, on_cpu), false);
    d.scale = register_buffer(tag + "_output_scale", from_vector<float>(scale, Shape{d.n_pad}, on_cpu), false);
    impl_->device.push_back(std::move(d));
  }
}

QuantizedSequential::~QuantizedSequential() = default;

std::string QuantizedSequential::extra_repr() const {
  std::string s;
  for (const QuantizedLayer& l : layers_) {
    if (!s.empty()) s += ", ";
    s += detail::str_cat(l.name, ": ", l.kind == QuantizedLayer::Kind::Linear ? "Linear" : "Conv2d", " ", l.in, "->",
                         l.out, l.relu ? "+ReLU" : "", l.maxpool_after ? "+MaxPool" : "");
  }
  return s;
}

int64_t QuantizedSequential::size_bytes() const {
  int64_t n = 0;
  for (const QuantizedLayer& l : layers_)
    n += static_cast<int64_t>(l.weight_q.size() + 4 * (l.weight_scale.size() + l.bias.size() + 1));
  return n;
}

namespace {
// The input both forward paths take: f32, non-empty, [N, C, H, W] for a model that starts with a
// convolution or a Flatten, else [N, features].
void check_input(const QuantizedLayer& first, const Tensor& x) {
  EMBER_CHECK(x.dtype() == DType::F32, "QuantizedSequential: expected an F32 input, got ", x.dtype());
  const bool four_d = first.kind == QuantizedLayer::Kind::Conv2d || first.flatten_before;
  EMBER_CHECK(four_d ? x.dim() == 4 : x.dim() == 2, "QuantizedSequential: layer '", first.name, "' takes ",
              four_d ? "[N, C, H, W]" : "[N, features]", " input, got shape ", shape_str(x.shape()));
  EMBER_CHECK(x.size(0) > 0, "QuantizedSequential: empty batch");
}
}  // namespace

Tensor QuantizedSequential::forward(const Tensor& input_any) {
  if (!input_any.device().is_cpu()) return forward_primitives(input_any);
  check_input(layers_.front(), input_any);
  const QuantizedLayer& first = layers_.front();
  const Tensor input = input_any.contiguous();
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto it = impl_->plans.find(input.shape());
  if (it == impl_->plans.end()) {
    Impl::Plan plan;
    dnnl::engine& eng = cpu::dnnl_engine();
    const Shape& in_shape = input.shape();
    const int64_t n = in_shape[0];
    // The activation entering each layer: dims, layout and dtype.
    memory::dims dims(in_shape.begin(), in_shape.end());
    const bool four_d = dims.size() == 4;
    memory::desc user_in(dims, dt::f32, four_d ? tag::nchw : tag::nc);
    memory::desc cur(dims, act_type(first.input_unsigned), four_d ? tag::nhwc : tag::nc);
    plan.input = memory(user_in, eng, DNNL_MEMORY_NONE);
    memory cur_mem(cur, eng);
    {
      dnnl::primitive_attr attr;
      attr.set_output_scales(0, {1.0f / first.input_scale});
      dnnl::reorder::primitive_desc pd(eng, user_in, eng, cur, attr);
      plan.steps.push_back({dnnl::reorder(pd), {{DNNL_ARG_FROM, plan.input}, {DNNL_ARG_TO, cur_mem}}});
    }
    for (size_t i = 0; i < layers_.size(); ++i) {
      const QuantizedLayer& l = layers_[i];
      const bool last = i + 1 == layers_.size();
      const QuantizedLayer* next = last ? nullptr : &layers_[i + 1];
      const dt out_type = last ? dt::f32 : act_type(next->input_unsigned);
      const OutputConstants constants = output_constants(l, next);
      const std::vector<float>& scales = constants.scale;
      const std::vector<float>& bias = constants.bias_div;
      dnnl::primitive_attr attr;
      attr.set_output_scales(1 << 1, scales);
      if (l.relu) {
        dnnl::post_ops po;
        po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
        attr.set_post_ops(po);
      }
      memory::desc bias_md({l.out}, dt::f32, tag::x);
      memory bias_mem(bias_md, eng);
      std::memcpy(bias_mem.get_data_handle(), bias.data(), bias.size() * sizeof(float));
      memory::desc user_w, dst;
      memory::dims dst_dims;
      dnnl::primitive prim;
      memory::desc prim_w;
      const int8_t* weights = l.weight_q.data();
      std::vector<int8_t> permuted;
      if (l.kind == QuantizedLayer::Kind::Conv2d) {
        EMBER_CHECK(cur.dims().size() == 4 && cur.dims()[1] == l.in, "QuantizedSequential: layer '", l.name, "' takes ",
                    l.in, " channels of [N, C, H, W]");
        const int64_t h = cur.dims()[2], w = cur.dims()[3];
        const int64_t ho = conv_out(h, l.kernel[0], l.stride[0], l.padding[0], l.dilation[0]);
        const int64_t wo = conv_out(w, l.kernel[1], l.stride[1], l.padding[1], l.dilation[1]);
        EMBER_CHECK(ho > 0 && wo > 0, "QuantizedSequential: layer '", l.name, "' gets a ", h, "x", w,
                    " input, too small for its kernel");
        dst_dims = {n, l.out, ho, wo};
        user_w = memory::desc({l.out, l.in, l.kernel[0], l.kernel[1]}, dt::s8, tag::oihw);
        dst = memory::desc(dst_dims, out_type, last ? tag::nchw : tag::nhwc);
        memory::desc any_w({l.out, l.in, l.kernel[0], l.kernel[1]}, dt::s8, tag::any);
        dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, cur,
                                          any_w, bias_md, dst, {l.stride[0], l.stride[1]},
                                          {l.dilation[0] - 1, l.dilation[1] - 1}, {l.padding[0], l.padding[1]},
                                          {l.padding[0], l.padding[1]});
        dnnl::convolution_forward::primitive_desc pd(d, attr, eng);
        prim_w = pd.weights_desc();
        prim = dnnl::convolution_forward(pd);
      } else {
        const memory::dims cd = cur.dims();
        EMBER_CHECK(cd.size() == 2 || l.flatten_before, "QuantizedSequential: layer '", l.name,
                    "' is a Linear on a 4-D activation without a Flatten before it");
        int64_t features = 1;
        for (size_t k = 1; k < cd.size(); ++k) features = checked_mul(features, cd[k], "an activation");
        EMBER_CHECK(features == l.in, "QuantizedSequential: layer '", l.name, "' takes ", l.in, " features, gets ",
                    features);
        dst_dims = {n, l.out};
        const memory::dims wd = {l.out, l.in};
        user_w = memory::desc(wd, dt::s8, tag::oi);
        if (cd.size() == 4) {
          // The NHWC activation is read as [N, H*W*C] (oneDNN's 2-D int8 inner product is its fast
          // one), so the weight's columns, in the (c, h, w) order of a Flatten of NCHW, are permuted
          // to (h, w, c) once here.
          const int64_t C = cd[1], HW = cd[2] * cd[3];
          permuted.resize(l.weight_q.size());
          for (int64_t o = 0; o < l.out; ++o)
            for (int64_t c = 0; c < C; ++c)
              for (int64_t p = 0; p < HW; ++p)
                permuted[static_cast<size_t>(o * l.in + p * C + c)] =
                    l.weight_q[static_cast<size_t>(o * l.in + c * HW + p)];
          weights = permuted.data();
          cur = memory::desc({n, l.in}, cur.data_type(), tag::nc);
          cur_mem = memory(cur, eng, cur_mem.get_data_handle());
        }
        dst = memory::desc(dst_dims, out_type, tag::nc);
        dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, cur, memory::desc(wd, dt::s8, tag::any),
                                            bias_md, dst);
        dnnl::inner_product_forward::primitive_desc pd(d, attr, eng);
        prim_w = pd.weights_desc();
        prim = dnnl::inner_product_forward(pd);
      }
      memory user_w_mem(user_w, eng, const_cast<int8_t*>(weights));
      memory w_mem(prim_w, eng);
      {
        dnnl::stream s(eng);
        dnnl::reorder(user_w_mem, w_mem).execute(s, user_w_mem, w_mem);
        s.wait();
      }
      memory dst_mem(dst, eng);
      plan.steps.push_back(
          {prim,
           {{DNNL_ARG_SRC, cur_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_BIAS, bias_mem}, {DNNL_ARG_DST, dst_mem}}});
      cur = dst;
      cur_mem = dst_mem;
      if (l.maxpool_after > 0) {
        const int64_t k = l.maxpool_after;
        const memory::dims cd = cur.dims();
        EMBER_CHECK(cd[2] >= k && cd[3] >= k, "QuantizedSequential: the max-pool after '", l.name, "' gets ", cd[2],
                    "x", cd[3], ", smaller than its kernel ", k);
        memory::desc pooled({cd[0], cd[1], cd[2] / k, cd[3] / k}, cur.data_type(), last ? tag::nchw : tag::nhwc);
        dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max, cur, pooled,
                                      {k, k}, {k, k}, {0, 0}, {0, 0});
        dnnl::pooling_forward::primitive_desc pd(d, eng);
        memory pooled_mem(pooled, eng);
        plan.steps.push_back({dnnl::pooling_forward(pd), {{DNNL_ARG_SRC, cur_mem}, {DNNL_ARG_DST, pooled_mem}}});
        cur = pooled;
        cur_mem = pooled_mem;
      }
    }
    plan.output = cur_mem;
    const memory::dims od = cur.dims();
    plan.output_shape = Shape(od.begin(), od.end());
    it = impl_->plans.emplace(input.shape(), std::move(plan)).first;
  }
  Impl::Plan& plan = it->second;
  plan.input.set_data_handle(input.data_ptr());
  dnnl::stream s(cpu::dnnl_engine());
  for (Impl::Step& step : plan.steps) step.prim.execute(s, step.args);
  s.wait();
  Tensor out = empty(plan.output_shape, TensorOptions(DType::F32, Device::cpu()));
  std::memcpy(out.data_ptr(), plan.output.get_data_handle(), static_cast<size_t>(out.numel()) * sizeof(float));
  return out;
}

// The device path: ember's int8 primitives (backend.h) on the input's device. Activations are
// codes in U8 tensors (quant_math.h's bytes): NHWC [N, H, W, C] between convolutions, [N, F] before
// a Linear; each Linear / Conv2d is an int8 GEMM of the activation (im2col'd for a convolution, or
// copied to a row length of k_pad) with its [n_pad, k_pad] weight, whose epilogue requantises to
// the next layer's codes, or gives the last layer's f32 (NCHW for a convolution).
Tensor QuantizedSequential::forward_primitives(const Tensor& input_any) {
  const Device dev = input_any.device();
  for (const Impl::DeviceLayer& d : impl_->device) {
    EMBER_CHECK(d.weight.device() == dev, "QuantizedSequential: the input is on ", dev.str(),
                " but the int8 model is on ", d.weight.device().str(), "; move the model with .to(", dev.str(),
                ") (or the input to its device)");
    EMBER_CHECK(d.bias_div.dtype() == DType::F32 && d.scale.dtype() == DType::F32,
                "QuantizedSequential: the int8 model's f32 scales were cast to ", d.scale.dtype(),
                " (Module::to(dtype)); an int8 model keeps them in f32: rebuild or reload it");
  }
  check_input(layers_.front(), input_any);
  const QuantizedLayer& first = layers_.front();
  const bool conv_first = first.kind == QuantizedLayer::Kind::Conv2d;
  const int64_t n = input_any.size(0);
  const Tensor input = input_any.contiguous();
  Backend& be = backend_for(dev);
  autograd::NoGradGuard no_grad;

  // The activation: codes [N, H, W, C] (four_d) or [N, cols] with `cols` >= its `features`.
  Tensor codes;
  bool four_d = conv_first;
  int64_t h = 1, w = 1, c = 0, features = 0;
  if (conv_first) {
    EMBER_CHECK(input.size(1) == first.in, "QuantizedSequential: layer '", first.name, "' takes ", first.in,
                " channels of [N, C, H, W], got shape ", shape_str(input.shape()));
    h = input.size(2), w = input.size(3), c = input.size(1);
    codes = make_empty({n, h, w, c}, DType::U8, dev);
    be.int8_quantize(codes, input, {1.0f / first.input_scale, first.input_unsigned, true});
  } else {
    // A Flatten of NCHW before the first Linear reads the input in its own (c, h, w) order.
    features = input.numel() / n;
    EMBER_CHECK(features == first.in, "QuantizedSequential: layer '", first.name, "' takes ", first.in,
                " features, gets ", features, " (input shape ", shape_str(input.shape()), ")");
    codes = make_empty({n, impl_->device.front().k_pad}, DType::U8, dev);
    be.int8_quantize(codes, input, {1.0f / first.input_scale, first.input_unsigned, false});
  }
  Tensor result;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const QuantizedLayer& l = layers_[i];
    const Impl::DeviceLayer& d = impl_->device[i];
    const bool last = i + 1 == layers_.size();
    const QuantizedLayer* next = last ? nullptr : &layers_[i + 1];
    const int32_t zero_byte = math::int8_code_offset(l.input_unsigned);
    Tensor a;
    int64_t ho = 1, wo = 1;
    if (l.kind == QuantizedLayer::Kind::Conv2d) {
      EMBER_CHECK(four_d && c == l.in, "QuantizedSequential: layer '", l.name, "' takes ", l.in,
                  " channels of [N, C, H, W]");
      ho = conv_out(h, l.kernel[0], l.stride[0], l.padding[0], l.dilation[0]);
      wo = conv_out(w, l.kernel[1], l.stride[1], l.padding[1], l.dilation[1]);
      EMBER_CHECK(ho > 0 && wo > 0, "QuantizedSequential: layer '", l.name, "' gets a ", h, "x", w,
                  " input, too small for its kernel");
      const bool pointwise = l.kernel == Int2{1, 1} && l.stride == Int2{1, 1} && l.padding == Int2{0, 0};
      if (pointwise && c == d.k_pad) {
        a = codes.view({n * h * w, c});
      } else {
        a = make_empty({checked_mul(checked_mul(n, ho, "an im2col"), wo, "an im2col"), d.k_pad}, DType::U8, dev);
        Int8Im2colParams p;
        p.kernel[0] = l.kernel[0], p.kernel[1] = l.kernel[1];
        p.stride[0] = l.stride[0], p.stride[1] = l.stride[1];
        p.padding[0] = l.padding[0], p.padding[1] = l.padding[1];
        p.dilation[0] = l.dilation[0], p.dilation[1] = l.dilation[1];
        p.out_h = ho, p.out_w = wo;
        p.zero_byte = zero_byte;
        be.int8_im2col(a, codes, p);
      }
    } else {
      EMBER_CHECK(!four_d || l.flatten_before, "QuantizedSequential: layer '", l.name,
                  "' is a Linear on a 4-D activation without a Flatten before it");
      const int64_t f = four_d ? checked_mul(checked_mul(h, w, "an activation"), c, "an activation") : features;
      EMBER_CHECK(f == l.in, "QuantizedSequential: layer '", l.name, "' takes ", l.in, " features, gets ", f);
      const int64_t cols = four_d ? f : codes.size(1);
      if (cols == d.k_pad) {
        a = codes.view({n, cols});
      } else {
        // Rows of `f` codes to rows of k_pad: an im2col of [N, 1, 1, f] with a 1x1 window.
        a = make_empty({n, d.k_pad}, DType::U8, dev);
        Int8Im2colParams p;
        p.zero_byte = zero_byte;
        be.int8_im2col(a, codes.view({n, 1, 1, f}), p);
      }
      four_d = false;
    }
    const bool conv = l.kind == QuantizedLayer::Kind::Conv2d;
    Int8GemmParams g;
    g.comp = d.comp, g.bias_div = d.bias_div, g.scale = d.scale;
    g.relu = l.relu;
    g.out_unsigned = next && next->input_unsigned;
    Tensor out;
    if (last) {
      out = conv ? make_empty({n, l.out, ho, wo}, DType::F32, dev) : make_empty({n, l.out}, DType::F32, dev);
      if (conv) g.out_hw = ho * wo;
    } else {
      out = conv ? make_empty({n, ho, wo, l.out}, DType::U8, dev) : make_empty({n, l.out}, DType::U8, dev);
    }
    be.int8_gemm(out, a, d.weight, g);
    if (conv) {
      h = ho, w = wo, c = l.out;
      four_d = true;
    } else {
      features = l.out;
    }
    if (l.maxpool_after > 0) {
      const int64_t k = l.maxpool_after;
      EMBER_CHECK(h / k > 0 && w / k > 0, "QuantizedSequential: layer '", l.name, "' gives a ", h, "x", w,
                  " output, smaller than its ", k, "x", k, " max-pool");
      if (last) {
        MaxPool2dArgs pool;
        pool.kernel_size = {k, k};
        out = max_pool2d(out, pool);
      } else {
        Tensor pooled = make_empty({n, h / k, w / k, c}, DType::U8, dev);
        be.int8_max_pool(pooled, out, k);
        out = pooled;
      }
      h /= k, w /= k;
    }
    if (last)
      result = out;
    else
      codes = out;
  }
  return result;
}

// ---- calibration and quantisation ----
namespace {

struct Stats {
  double min = 0, max_abs = 0;
  std::vector<float> abs_values;  // for percentiles
  bool seen = false;
};

void observe(Stats& s, const Tensor& x, bool keep_values) {
  const std::vector<float> v = x.detach().cpu().contiguous().to_vector<float>();
  for (float f : v) {
    EMBER_CHECK(std::isfinite(f), "quantize: calibration met a non-finite activation (", f, ")");
    if (!s.seen || f < s.min) s.min = f;
    s.max_abs = std::max(s.max_abs, static_cast<double>(std::fabs(f)));
    s.seen = true;
    if (keep_values) s.abs_values.push_back(std::fabs(f));
  }
}

float scale_of(Stats& s, const QuantizeOptions& o, bool is_unsigned) {
  double amax = s.max_abs;
  if (o.calibration == Calibration::Percentile && !s.abs_values.empty()) {
    const auto k = static_cast<size_t>(
        std::min<double>(static_cast<double>(s.abs_values.size() - 1),
                         std::ceil(o.percentile / 100.0 * static_cast<double>(s.abs_values.size())) - 1));
    std::nth_element(s.abs_values.begin(), s.abs_values.begin() + static_cast<std::ptrdiff_t>(k), s.abs_values.end());
    amax = s.abs_values[k];
  }
  if (!(amax > 0)) return 1.0f;
  return static_cast<float>(amax / (is_unsigned ? 255.0 : 127.0));
}

void quantize_weight(const Tensor& weight, const Tensor& bias, QuantizedLayer& l) {
  const std::vector<float> w = weight.detach().to(DType::F32).cpu().contiguous().to_vector<float>();
  const size_t row = w.size() / static_cast<size_t>(l.out);
  l.weight_q.resize(w.size());
  l.weight_scale.resize(static_cast<size_t>(l.out));
  for (size_t o = 0; o < static_cast<size_t>(l.out); ++o) {
    float amax = 0;
    for (size_t j = 0; j < row; ++j) amax = std::max(amax, std::fabs(w[o * row + j]));
    const float s = amax > 0 ? amax / 127.0f : 1.0f;
    l.weight_scale[o] = s;
    for (size_t j = 0; j < row; ++j)
      l.weight_q[o * row + j] = static_cast<int8_t>(std::clamp(std::nearbyint(w[o * row + j] / s), -127.0f, 127.0f));
  }
  if (bias.defined()) l.bias = bias.detach().to(DType::F32).cpu().contiguous().to_vector<float>();
}

}  // namespace

std::shared_ptr<QuantizedSequential> quantize(nn::Module& model, const std::vector<Tensor>& calibration,
                                              const QuantizeOptions& options) {
  auto* seq = dynamic_cast<nn::Sequential*>(&model);
  EMBER_CHECK(seq, "quantize: int8 quantisation supports nn::Sequential chains (the MLP, models::mnist_cnn), not a ",
              model.type_name());
  EMBER_CHECK(!calibration.empty(), "quantize: no calibration batches; pass a few hundred training inputs");
  EMBER_CHECK(options.calibration != Calibration::Percentile || (options.percentile > 0 && options.percentile <= 100),
              "quantize: percentile must be in (0, 100], got ", options.percentile);
  // The plan: which children become which layer, checked before any calibration runs.
  std::vector<QuantizedLayer> layers;
  std::vector<size_t> layer_child;  // the child index of each layer
  bool pending_flatten = false;
  enum class Prev { None, Layer, Relu, Pool } prev = Prev::None;
  const auto& children = seq->named_children();
  for (size_t i = 0; i < children.size(); ++i) {
    const std::string& name = children[i].first;
    nn::Module& m = *children[i].second;
    auto unsupported = [&](const std::string& why) {
      throw Error("quantize: child '" + name + "' (" + m.type_name() + ") " + why +
                  "; int8 quantisation supports Sequential chains of Linear, Conv2d, ReLU (after a Linear/Conv2d), "
                  "MaxPool2d (after a Conv2d, stride = kernel, no padding), Flatten, Dropout and Identity");
    };
    if (auto* lin = dynamic_cast<nn::Linear*>(&m)) {
      QuantizedLayer l;
      l.kind = QuantizedLayer::Kind::Linear;
      l.name = name;
      l.in = lin->in_features;
      l.out = lin->out_features;
      l.flatten_before = pending_flatten;
      pending_flatten = false;
      quantize_weight(lin->weight, lin->bias, l);
      layers.push_back(std::move(l));
      layer_child.push_back(i);
      prev = Prev::Layer;
    } else if (auto* conv = dynamic_cast<nn::Conv2d*>(&m)) {
      if (pending_flatten) unsupported("follows a Flatten");
      if (conv->options.groups != 1) unsupported("has groups " + std::to_string(conv->options.groups));
      if (conv->options.padding_mode != ConvPadding::Explicit) unsupported("uses Same / Valid padding mode");
      QuantizedLayer l;
      l.kind = QuantizedLayer::Kind::Conv2d;
      l.name = name;
      l.in = conv->in_channels;
      l.out = conv->out_channels;
      l.kernel = conv->kernel_size;
      l.stride = conv->options.stride;
      l.padding = conv->options.padding;
      l.dilation = conv->options.dilation;
      quantize_weight(conv->weight, conv->bias, l);
      layers.push_back(std::move(l));
      layer_child.push_back(i);
      prev = Prev::Layer;
    } else if (dynamic_cast<nn::ReLU*>(&m)) {
      if (prev != Prev::Layer) unsupported("does not directly follow a Linear or Conv2d");
      layers.back().relu = true;
      prev = Prev::Relu;
    } else if (auto* pool = dynamic_cast<nn::MaxPool2d*>(&m)) {
      const Int2 k = pool->args.kernel_size, s = pool->args.stride.value_or(k);
      if (layers.empty() || layers.back().kind != QuantizedLayer::Kind::Conv2d || prev == Prev::Pool ||
          prev == Prev::None)
        unsupported("does not follow a Conv2d");
      if (k[0] != k[1] || s != k || pool->args.padding != Int2{0, 0} || pool->args.dilation != Int2{1, 1} ||
          pool->args.ceil_mode)
        unsupported("is not a square max-pool with stride = kernel, no padding, dilation 1, floor mode");
      layers.back().maxpool_after = k[0];
      prev = Prev::Pool;
    } else if (auto* f = dynamic_cast<nn::Flatten*>(&m)) {
      if (f->start_dim != 1 || (f->end_dim != -1 && f->end_dim != 3)) unsupported("is not Flatten(1, -1)");
      pending_flatten = true;
    } else if (dynamic_cast<nn::Dropout*>(&m) || dynamic_cast<nn::Identity*>(&m)) {
      // The identity in eval mode.
    } else {
      unsupported("is not supported");
    }
  }
  EMBER_CHECK(!layers.empty(), "quantize: the Sequential holds no Linear or Conv2d");
  EMBER_CHECK(
      layer_child.back() + 1 >= children.size() ||
          [&] {
            for (size_t i = layer_child.back() + 1; i < children.size(); ++i) {
              nn::Module& m = *children[i].second;
              if (!dynamic_cast<nn::ReLU*>(&m) && !dynamic_cast<nn::Dropout*>(&m) && !dynamic_cast<nn::Identity*>(&m) &&
                  !dynamic_cast<nn::MaxPool2d*>(&m))
                return false;
            }
            return true;
          }(),
      "quantize: only ReLU, MaxPool2d, Dropout or Identity may follow the last Linear / Conv2d");

  // Calibration: the float model in eval mode, child by child, observing each layer's input.
  std::vector<Stats> stats(layers.size());
  const bool keep = options.calibration == Calibration::Percentile;
  {
    autograd::InferenceModeGuard inference;
    const bool was_training = model.is_training();
    model.eval();
    for (const Tensor& batch : calibration) {
      Tensor x = batch;
      size_t next = 0;
      for (size_t i = 0; i < children.size(); ++i) {
        if (next < layer_child.size() && layer_child[next] == i) observe(stats[next++], x, keep);
        x = (*children[i].second)(x);
      }
    }
    model.train(was_training);
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    layers[i].input_unsigned = stats[i].min >= 0;
    layers[i].input_scale = scale_of(stats[i], options, layers[i].input_unsigned);
  }
  return std::make_shared<QuantizedSequential>(std::move(layers));
}

// ---- safetensors ----

void QuantizedSequential::save(const std::string& path) const {
  std::vector<std::pair<std::string, Tensor>> tensors;
  nlohmann::json spec = nlohmann::json::array();
  const TensorOptions f32(DType::F32, Device::cpu());
  for (const QuantizedLayer& l : layers_) {
    std::vector<uint8_t> q(l.weight_q.size());
    for (size_t j = 0; j < q.size(); ++j) q[j] = static_cast<uint8_t>(static_cast<int>(l.weight_q[j]) + 128);
    const Shape wshape =
        l.kind == QuantizedLayer::Kind::Conv2d ? Shape{l.out, l.in, l.kernel[0], l.kernel[1]} : Shape{l.out, l.in};
    tensors.emplace_back(l.name + ".weight_q",
                         from_vector<uint8_t>(q, wshape, TensorOptions(DType::U8, Device::cpu())));
    tensors.emplace_back(l.name + ".weight_scale", from_vector<float>(l.weight_scale, Shape{l.out}, f32));
    if (!l.bias.empty()) tensors.emplace_back(l.name + ".bias", from_vector<float>(l.bias, Shape{l.out}, f32));
    tensors.emplace_back(l.name + ".input_scale", from_vector<float>({l.input_scale}, Shape{1}, f32));
    spec.push_back({{"name", l.name},
                    {"kind", l.kind == QuantizedLayer::Kind::Conv2d ? "conv2d" : "linear"},
                    {"in", l.in},
                    {"out", l.out},
                    {"kernel", l.kernel},
                    {"stride", l.stride},
                    {"padding", l.padding},
                    {"dilation", l.dilation},
                    {"input_unsigned", l.input_unsigned},
                    {"relu", l.relu},
                    {"flatten_before", l.flatten_before},
                    {"maxpool_after", l.maxpool_after}});
  }
  io::save_safetensors(path, tensors,
                       {{"format", "ember.quant.int8"},
                        {"ember.quant.layers", spec.dump()},
                        {"ember.quant.weight_q", "uint8 with zero point 128: w = (weight_q - 128) * weight_scale[o]"}});
}

std::shared_ptr<QuantizedSequential> QuantizedSequential::load(const std::string& path) {
  io::SafetensorsFile f = io::load_safetensors(path);
  auto fmt = f.metadata.find("format");
  EMBER_CHECK(fmt != f.metadata.end() && fmt->second == "ember.quant.int8", "QuantizedSequential::load: ", path,
              " is not an int8 model saved by QuantizedSequential::save (metadata \"format\" is not "
              "\"ember.quant.int8\")");
  auto it = f.metadata.find("ember.quant.layers");
  EMBER_CHECK(it != f.metadata.end(), "QuantizedSequential::load: ", path, " has no \"ember.quant.layers\" metadata");
  const nlohmann::json spec = detail::parse_json_limited(it->second, {.max_bytes = size_t{1} << 20, .max_depth = 4},
                                                         "QuantizedSequential::load: the layer list of " + path);
  std::map<std::string, Tensor> t(f.tensors.begin(), f.tensors.end());
  auto tensor = [&](const std::string& name, DType dtype, const Shape& shape, bool required) -> Tensor {
    auto e = t.find(name);
    if (e == t.end()) {
      EMBER_CHECK(!required, "QuantizedSequential::load: ", path, " lacks tensor '", name, "'");
      return Tensor();
    }
    EMBER_CHECK(e->second.dtype() == dtype && e->second.shape() == shape, "QuantizedSequential::load: ", path, ": '",
                name, "' is ", e->second.dtype(), " ", shape_str(e->second.shape()), ", expected ", dtype, " ",
                shape_str(shape));
    return e->second;
  };
  EMBER_CHECK(spec.is_array() && !spec.empty(), "QuantizedSequential::load: ", path,
              ": the layer list is not a non-empty array");
  std::vector<QuantizedLayer> layers;
  try {
    for (const nlohmann::json& j : spec) {
      QuantizedLayer l;
      l.name = j.at("name").get<std::string>();
      const std::string kind = j.at("kind").get<std::string>();
      EMBER_CHECK(kind == "linear" || kind == "conv2d", "QuantizedSequential::load: ", path, ": layer kind '", kind,
                  "' (expected linear or conv2d)");
      l.kind = kind == "conv2d" ? QuantizedLayer::Kind::Conv2d : QuantizedLayer::Kind::Linear;
      l.in = j.at("in").get<int64_t>();
      l.out = j.at("out").get<int64_t>();
      l.kernel = j.at("kernel").get<Int2>();
      l.stride = j.at("stride").get<Int2>();
      l.padding = j.at("padding").get<Int2>();
      l.dilation = j.at("dilation").get<Int2>();
      l.input_unsigned = j.at("input_unsigned").get<bool>();
      l.relu = j.at("relu").get<bool>();
      l.flatten_before = j.at("flatten_before").get<bool>();
      l.maxpool_after = j.at("maxpool_after").get<int64_t>();
      EMBER_CHECK(l.in > 0 && l.out > 0 && l.kernel[0] > 0 && l.kernel[1] > 0 && l.stride[0] > 0 && l.stride[1] > 0 &&
                      l.padding[0] >= 0 && l.padding[1] >= 0 && l.dilation[0] > 0 && l.dilation[1] > 0 &&
                      l.maxpool_after >= 0,
                  "QuantizedSequential::load: ", path, ": layer '", l.name, "' has invalid geometry");
      const Shape wshape =
          l.kind == QuantizedLayer::Kind::Conv2d ? Shape{l.out, l.in, l.kernel[0], l.kernel[1]} : Shape{l.out, l.in};
      const std::vector<uint8_t> q = tensor(l.name + ".weight_q", DType::U8, wshape, true).to_vector<uint8_t>();
      l.weight_q.resize(q.size());
      for (size_t k = 0; k < q.size(); ++k) {
        EMBER_CHECK(q[k] >= 1, "QuantizedSequential::load: ", path, ": '", l.name,
                    ".weight_q' holds 0 (weight -128), outside the symmetric range [1, 255]");
        l.weight_q[k] = static_cast<int8_t>(static_cast<int>(q[k]) - 128);
      }
      l.weight_scale = tensor(l.name + ".weight_scale", DType::F32, Shape{l.out}, true).to_vector<float>();
      if (Tensor b = tensor(l.name + ".bias", DType::F32, Shape{l.out}, false); b.defined())
        l.bias = b.to_vector<float>();
      l.input_scale = tensor(l.name + ".input_scale", DType::F32, Shape{1}, true).to_vector<float>()[0];
      layers.push_back(std::move(l));
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error("QuantizedSequential::load: " + path + ": malformed layer list: " + e.what());
  }
  return std::make_shared<QuantizedSequential>(std::move(layers));
}

}  // namespace ember::quant
