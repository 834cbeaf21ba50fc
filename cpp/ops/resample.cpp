// pad (constant, reflect, replicate) and interpolate (nearest, bilinear), composed from ember ops
// that already have both backends and a backward: cropping is narrow, constant padding is cat
// with filled blocks, reflect / replicate / nearest are index_select along each dim with indices
// computed on the host, and bilinear is separable, so it is two linear passes (rows, then columns),
// each two index_selects blended by per-position weights. The index and weight arithmetic is
// pool_norm_math.h's.
#include <cmath>

#include "cpp/backend/pool_norm_math.h"
#include "cpp/ops/op_utils.h"
#include "ember/profile.h"

namespace ember {
namespace {

Tensor index_tensor(const std::vector<int64_t>& v, Device device) {
  return from_vector<int64_t>(v, {static_cast<int64_t>(v.size())}).to(device);
}

const char* mode_name(PadMode m) {
  switch (m) {
    case PadMode::Constant: return "constant";
    case PadMode::Reflect: return "reflect";
    case PadMode::Replicate: return "replicate";
  }
  return "unknown";
}

}  // namespace

Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, PadMode mode, double value) {
  profile::Range range("pad");
  ops::check_defined(x, "pad");
  EMBER_CHECK(pads.size() % 2 == 0 && pads.size() <= 2 * static_cast<size_t>(x.dim()),
              "pad: pads must list (before, after) pairs for at most the input's ", x.dim(), " dims (input ",
              shape_str(x.shape()), "), got ", pads.size(), " values");
  EMBER_CHECK(mode == PadMode::Constant || mode == PadMode::Reflect || mode == PadMode::Replicate,
              "pad: unknown PadMode ", static_cast<int>(mode));
  const TensorOptions opts(x.dtype(), x.device());
  Tensor y = x;
  for (size_t i = 0; i < pads.size() / 2; ++i) {
    const int64_t d = x.dim() - 1 - static_cast<int64_t>(i), before = pads[2 * i], after = pads[2 * i + 1];
    const int64_t in = y.size(d);
    int64_t out = 0;
    EMBER_CHECK(!__builtin_add_overflow(in, before, &out) && !__builtin_add_overflow(out, after, &out), "pad: pads (",
                before, ", ", after, ") overflow dim ", d, " of size ", in);
    if (mode == PadMode::Constant) {
      EMBER_CHECK(out >= 0 && -before <= in && -after <= in, "pad: pads (", before, ", ", after, ") crop dim ", d,
                  " of input ", shape_str(x.shape()), " below 0 elements; crop at most the dim's size");
      const int64_t start = before < 0 ? -before : 0, end = after < 0 ? in + after : in;
      if (start > 0 || end < in) y = y.narrow(d, start, std::max<int64_t>(end - start, 0));
      std::vector<Tensor> pieces;
      Shape block = y.shape();
      if (before > 0) {
        block[d] = before;
        pieces.push_back(full(block, value, opts));
      }
      pieces.push_back(y);
      if (after > 0) {
        block[d] = after;
        pieces.push_back(full(block, value, opts));
      }
      if (pieces.size() > 1) y = cat(pieces, d);
      continue;
    }
    EMBER_CHECK(before >= 0 && after >= 0, "pad: ", mode_name(mode), " pads must be non-negative, got (", before, ", ",
                after, ") for dim ", d);
    if (mode == PadMode::Reflect)
      EMBER_CHECK(before < in && after < in, "pad: reflect pads (", before, ", ", after,
                  ") must each be smaller than dim ", d, " of input ", shape_str(x.shape()),
                  " (size ", in, "); use replicate or pad less");
    else
      EMBER_CHECK(in >= 1, "pad: replicate needs a non-empty dim ", d, ", input ", shape_str(x.shape()));
    if (before == 0 && after == 0) continue;
    std::vector<int64_t> idx(static_cast<size_t>(out));
    for (int64_t o = 0; o < out; ++o) {
      const int64_t j = o - before;
      if (mode == PadMode::Reflect) idx[o] = j < 0 ? -j : (j >= in ? 2 * (in - 1) - j : j);
      else idx[o] = j < 0 ? 0 : (j >= in ? in - 1 : j);
    }
    y = index_select(y, d, index_tensor(idx, x.device()));
  }
  return y.is_same(x) ? x : y;
}

Tensor interpolate(const Tensor& x, const InterpolateArgs& args) {
  profile::Range range("interpolate");
  ops::check_defined(x, "interpolate");
  ops::check_floating(x, "interpolate");
  EMBER_CHECK(x.dim() == 4, "interpolate: expected a 4-D [N, C, H, W] input, got shape ", shape_str(x.shape()));
  EMBER_CHECK(args.size.has_value() != args.scale_factor.has_value(),
              "interpolate: give exactly one of size and scale_factor");
  EMBER_CHECK(args.mode == InterpolateMode::Nearest || args.mode == InterpolateMode::Bilinear,
              "interpolate: unknown InterpolateMode ", static_cast<int>(args.mode));
  EMBER_CHECK(!(args.mode == InterpolateMode::Nearest && args.align_corners),
              "interpolate: align_corners applies to bilinear only; leave it false for nearest");
  EMBER_CHECK(x.size(2) > 0 && x.size(3) > 0, "interpolate: input ", shape_str(x.shape()),
              " has an empty plane; height and width must be at least 1");
  Tensor y = x;
  for (int a = 0; a < 2; ++a) {
    const int64_t d = 2 + a, in = x.size(d);
    int64_t out = 0;
    double scale = 0.0;  // in / out, or 1 / scale_factor
    if (args.size) {
      out = (*args.size)[a];
      EMBER_CHECK(out >= 1, "interpolate: size must be at least 1 in each dim, got (", (*args.size)[0], ", ",
                  (*args.size)[1], ")");
      scale = static_cast<double>(in) / static_cast<double>(out);
    } else {
      const double sf = (*args.scale_factor)[a];
      EMBER_CHECK(std::isfinite(sf) && sf > 0.0, "interpolate: scale_factor must be positive and finite, got ", sf);
      const double o = std::floor(static_cast<double>(in) * sf);
      EMBER_CHECK(o >= 1.0 && o < 9.0e15, "interpolate: scale_factor ", sf, " turns dim ", d, " of input ",
                  shape_str(x.shape()), " into ", o, " elements; the output must have at least 1 (and fit 2^53)");
      out = static_cast<int64_t>(o);
      scale = 1.0 / sf;
    }
    if (args.mode == InterpolateMode::Nearest) {
      // PyTorch computes the nearest scale in float: in / out, or 1 / scale_factor.
      const float fscale = args.size ? static_cast<float>(in) / static_cast<float>(out) : static_cast<float>(scale);
      std::vector<int64_t> idx(static_cast<size_t>(out));
      for (int64_t o = 0; o < out; ++o) idx[o] = math::nearest_source(o, in, out, fscale);
      y = index_select(y, d, index_tensor(idx, x.device()));
      continue;
    }
    std::vector<int64_t> i0(static_cast<size_t>(out)), i1(static_cast<size_t>(out));
    std::vector<double> w0(static_cast<size_t>(out)), w1(static_cast<size_t>(out));
    for (int64_t o = 0; o < out; ++o) {
      const math::LinearTaps t = math::linear_taps(math::bilinear_source(o, in, out, scale, args.align_corners), in);
      i0[o] = t.i0, i1[o] = t.i1, w1[o] = t.w1, w0[o] = 1.0 - t.w1;
    }
    const Shape ws = a == 0 ? Shape{out, 1} : Shape{out};
    const Tensor lo = from_vector<double>(w0, ws).to(x.dtype()).to(x.device());
    const Tensor hi = from_vector<double>(w1, ws).to(x.dtype()).to(x.device());
    y = add(mul(index_select(y, d, index_tensor(i0, x.device())), lo),
            mul(index_select(y, d, index_tensor(i1, x.device())), hi));
  }
  return y;
}

}  // namespace ember
