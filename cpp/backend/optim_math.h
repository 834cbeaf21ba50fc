// The per-element arithmetic of every optimizer update, written once for the CPU loop and the
// fused CUDA kernel. Each function follows PyTorch's single-tensor implementation op by op, in the
// parameter's dtype, so the two engines round alike: add(x, alpha) is x + alpha * y, addcmul is
// x + value * a * b, addcdiv is x + value * a / b, lerp is PyTorch's two-sided formula.
#pragma once
#include <cmath>
#include <cstdint>

#include "cpp/backend/backend.h"
#include "cpp/backend/host_device.h"

namespace ember::optim_math {

// f64 arithmetic rounded once per operation on both engines: nvcc would otherwise contract a * b + c
// into an FMA on the device (the host build targets x86-64 without FMA, so it never contracts).
EMBER_HOST_DEVICE double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
EMBER_HOST_DEVICE double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
EMBER_HOST_DEVICE double sub_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
EMBER_HOST_DEVICE double div_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
EMBER_HOST_DEVICE double sqrt_rn(double a) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

// x^t for a step count t >= 0 by binary exponentiation: only correctly rounded products, so host
// and device give the same bits (std::pow and CUDA's pow are each within an ulp or two of x^t but
// not of each other). For Adam's betas the relative error is below 2 log2(t) * 2^-53.
EMBER_HOST_DEVICE double step_pow(double x, double t) {
  double result = 1.0, base = x;
  for (auto n = static_cast<uint64_t>(t); n != 0; n >>= 1) {
    if (n & 1) result = mul_rn(result, base);
    base = mul_rn(base, base);
  }
  return result;
}

// The scalars of an update at step t (1 on the first) from its group's options, as PyTorch's
// single-tensor implementations compute their Python floats. The host runs this for every eager
// step; a capturable optimizer's kernel runs it inside the captured step (cuda/kernels/optim.cu),
// so the two give the same bits.
EMBER_HOST_DEVICE OptimizerHyper hyper_at(OptimizerAlgo algo, const OptimizerInputs& in, double t, bool first_step) {
  OptimizerHyper h;
  h.weight_decay = in.weight_decay;
  h.maximize = in.maximize != 0.0;
  h.first_step = first_step;
  switch (algo) {
    case OptimizerAlgo::Sgd:
      h.step_size = in.lr;
      h.momentum = in.momentum;
      h.dampening_complement = sub_rn(1.0, in.dampening);
      h.nesterov = in.nesterov != 0.0;
      break;
    case OptimizerAlgo::Adam: {
      const double bias_correction1 = sub_rn(1.0, step_pow(in.beta1, t));
      const double bias_correction2 = sub_rn(1.0, step_pow(in.beta2, t));
      h.step_size = div_rn(in.lr, bias_correction1);
      h.bias_correction2_sqrt = sqrt_rn(bias_correction2);
      h.decoupled_weight_decay = in.decoupled_weight_decay != 0.0;
      h.decay_factor = sub_rn(1.0, mul_rn(in.lr, in.weight_decay));
      h.beta1_complement = sub_rn(1.0, in.beta1);
      h.beta2 = in.beta2;
      h.beta2_complement = sub_rn(1.0, in.beta2);
      h.eps = in.eps;
      h.amsgrad = in.amsgrad != 0.0;
      break;
    }
    case OptimizerAlgo::Rmsprop:
      h.step_size = in.lr;
      h.beta2 = in.beta2;
      h.beta2_complement = sub_rn(1.0, in.beta2);
      h.eps = in.eps;
      h.momentum = in.momentum;
      h.centered = in.centered != 0.0;
      break;
    case OptimizerAlgo::Adagrad:
      h.step_size = div_rn(in.lr, add_rn(1.0, mul_rn(sub_rn(t, 1.0), in.lr_decay)));
      h.eps = in.eps;
      break;
  }
  return h;
}

// OptimizerHyper cast to the compute type once per parameter (PyTorch casts Python scalars to
// the tensor's dtype the same way).
template <class C>
struct Scalars {
  C step_size, weight_decay, decay_factor, momentum, dampening_complement, beta1_complement, beta2,
      beta2_complement, eps, bias_correction2_sqrt;
  bool has_weight_decay, maximize, nesterov, first_step, amsgrad, decoupled_weight_decay, centered;
};

template <class C>
EMBER_HOST_DEVICE Scalars<C> cast_scalars(const OptimizerHyper& h) {
  return Scalars<C>{C(h.step_size),
                    C(h.weight_decay),
                    C(h.decay_factor),
                    C(h.momentum),
                    C(h.dampening_complement),
                    C(h.beta1_complement),
                    C(h.beta2),
                    C(h.beta2_complement),
                    C(h.eps),
                    C(h.bias_correction2_sqrt),
                    h.weight_decay != 0.0,
                    h.maximize,
                    h.nesterov,
                    h.first_step,
                    h.amsgrad,
                    h.decoupled_weight_decay,
                    h.centered};
}

// torch.lerp: start + w (end - start) for |w| < 0.5, else end - (end - start)(1 - w).
template <class C>
EMBER_HOST_DEVICE C lerp(C start, C end, C w) {
  return (w < C(0.5) && w > C(-0.5)) ? start + w * (end - start) : end - (end - start) * (C(1) - w);
}

// sqrt in C, correctly rounded on both engines (IEEE sqrt on the host; on CUDA sqrtf is correctly
// rounded unless -use_fast_math, which ember does not use). sqrtf, not the double sqrt rounded to
// float (the same value), so the CPU loop vectorises.
template <class C>
EMBER_HOST_DEVICE C csqrt(C x) {
  if constexpr (sizeof(C) == sizeof(float)) return sqrtf(x);
  else return sqrt(x);
}

// torch.maximum: NaN in either operand propagates.
template <class C>
EMBER_HOST_DEVICE C nan_max(C a, C b) {
  if (a != a) return a;
  if (b != b) return b;
  return a > b ? a : b;
}

// The gradient after maximize and L2 weight decay (grad.add(param, alpha=weight_decay)).
template <class C>
EMBER_HOST_DEVICE C effective_grad(C p, C g, const Scalars<C>& s, bool l2) {
  if (s.maximize) g = -g;
  if (l2 && s.has_weight_decay) g = g + s.weight_decay * p;
  return g;
}

// SGD with momentum, dampening and Nesterov. `buf` is null without momentum.
template <class C>
EMBER_HOST_DEVICE void sgd_update(C& p, C g, C* buf, const Scalars<C>& s) {
  g = effective_grad(p, g, s, true);
  if (buf) {
    const C b = s.first_step ? g : *buf * s.momentum + s.dampening_complement * g;
    *buf = b;
    g = s.nesterov ? g + s.momentum * b : b;
  }
  p = p + (-s.step_size) * g;
}

// Adam / AdamW (decoupled_weight_decay) with optional AMSGrad (`max_exp_avg_sq` non-null).
template <class C>
EMBER_HOST_DEVICE void adam_update(C& p, C g, C& exp_avg, C& exp_avg_sq, C* max_exp_avg_sq, const Scalars<C>& s) {
  g = effective_grad(p, g, s, !s.decoupled_weight_decay);
  if (s.decoupled_weight_decay && s.has_weight_decay) p = p * s.decay_factor;
  exp_avg = lerp(exp_avg, g, s.beta1_complement);
  exp_avg_sq = exp_avg_sq * s.beta2 + s.beta2_complement * g * g;
  C second = exp_avg_sq;
  if (max_exp_avg_sq) {
    *max_exp_avg_sq = nan_max(*max_exp_avg_sq, exp_avg_sq);
    second = *max_exp_avg_sq;
  }
  const C denom = csqrt(second) / s.bias_correction2_sqrt + s.eps;
  p = p + (-s.step_size) * exp_avg / denom;
}

// RMSprop; `momentum_buffer` null without momentum, `grad_avg` null unless centered.
template <class C>
EMBER_HOST_DEVICE void rmsprop_update(C& p, C g, C& square_avg, C* momentum_buffer, C* grad_avg, const Scalars<C>& s) {
  g = effective_grad(p, g, s, true);
  square_avg = square_avg * s.beta2 + s.beta2_complement * g * g;
  C avg;
  if (grad_avg) {
    *grad_avg = lerp(*grad_avg, g, s.beta2_complement);
    avg = csqrt(square_avg + C(-1) * *grad_avg * *grad_avg);
  } else {
    avg = csqrt(square_avg);
  }
  avg = avg + s.eps;
  if (momentum_buffer) {
    *momentum_buffer = *momentum_buffer * s.momentum + C(1) * g / avg;
    p = p + (-s.step_size) * *momentum_buffer;
  } else {
    p = p + (-s.step_size) * g / avg;
  }
}

// Adagrad; step_size is the decayed lr, lr / (1 + (t - 1) lr_decay).
template <class C>
EMBER_HOST_DEVICE void adagrad_update(C& p, C g, C& sum, const Scalars<C>& s) {
  g = effective_grad(p, g, s, true);
  sum = sum + C(1) * g * g;
  const C std = csqrt(sum) + s.eps;
  p = p + (-s.step_size) * g / std;
}

// Element i of one parameter: the entry point both engines call. State pointers are null for
// unused slots (see OptimizerParam).
//
// Each value is loaded into a local, updated there and stored back unconditionally, so the
// branches on the scalars become selects and the CPU loop vectorises (cpu_optim.cpp).
template <OptimizerAlgo A, class C>
EMBER_HOST_DEVICE void update_element(C* p, const C* g, C* s0, C* s1, C* s2, int64_t i, const Scalars<C>& s) {
  C pv = p[i];
  if constexpr (A == OptimizerAlgo::Sgd) {
    if (s0) {
      C b = s0[i];
      sgd_update(pv, g[i], &b, s);
      s0[i] = b;
    } else {
      sgd_update(pv, g[i], static_cast<C*>(nullptr), s);
    }
  } else if constexpr (A == OptimizerAlgo::Adam) {
    C m = s0[i], v = s1[i];
    if (s2) {
      C mx = s2[i];
      adam_update(pv, g[i], m, v, &mx, s);
      s2[i] = mx;
    } else {
      adam_update(pv, g[i], m, v, static_cast<C*>(nullptr), s);
    }
    s0[i] = m;
    s1[i] = v;
  } else if constexpr (A == OptimizerAlgo::Rmsprop) {
    C sq = s0[i];
    C mb = s1 ? s1[i] : C(0), ga = s2 ? s2[i] : C(0);
    rmsprop_update(pv, g[i], sq, s1 ? &mb : static_cast<C*>(nullptr), s2 ? &ga : static_cast<C*>(nullptr), s);
    s0[i] = sq;
    if (s1) s1[i] = mb;
    if (s2) s2[i] = ga;
  } else {
    C sum = s0[i];
    adagrad_update(pv, g[i], sum, s);
    s0[i] = sum;
  }
  p[i] = pv;
}

}  // namespace ember::optim_math
