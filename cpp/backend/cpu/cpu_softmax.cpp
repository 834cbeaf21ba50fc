// CPU backend: row softmax / log-softmax and the fused cross-entropy forward and backward.
#include <cmath>

#include "cpp/backend/cpu/cpu_backend.h"
#include "cpp/backend/elementwise_math.h"

namespace ember {

void CpuBackend::softmax(const Tensor& out, const Tensor& in, bool log) {
  const int64_t cols = in.size(in.dim() - 1), rows = cols == 0 ? 0 : in.numel() / cols;
  cpu::visit_floating(in.dtype(), "softmax", [&]<class T>() {
    const T* x = cpu::ptr<T>(in);
    T* y = cpu::ptr<T>(out);
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * cols;
      T* yr = y + r * cols;
      T m = xr[0];
      for (int64_t j = 1; j < cols; ++j) m = xr[j] > m ? xr[j] : m;
      double sum = 0.0;
      for (int64_t j = 0; j < cols; ++j) sum += std::exp(static_cast<double>(xr[j] - m));
      if (log) {
        const T log_sum = static_cast<T>(std::log(sum));
        for (int64_t j = 0; j < cols; ++j) yr[j] = math::log_softmax_element(xr[j], m, log_sum);
      } else {
        for (int64_t j = 0; j < cols; ++j) yr[j] = static_cast<T>(std::exp(static_cast<double>(xr[j] - m)) / sum);
      }
    }
  });
}

void CpuBackend::softmax_backward(const Tensor& grad_in, const Tensor& grad_out, const Tensor& out, bool log) {
  const int64_t cols = out.size(out.dim() - 1), rows = cols == 0 ? 0 : out.numel() / cols;
  cpu::visit_floating(out.dtype(), "softmax_backward", [&]<class T>() {
    const T* g = cpu::ptr<T>(grad_out);
    const T* y = cpu::ptr<T>(out);
    T* gi = cpu::ptr<T>(grad_in);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t base = r * cols;
      double s = 0.0;
      for (int64_t j = 0; j < cols; ++j) s += log ? static_cast<double>(g[base + j]) : static_cast<double>(g[base + j]) * y[base + j];
      for (int64_t j = 0; j < cols; ++j) {
        if (log) gi[base + j] = static_cast<T>(g[base + j] - std::exp(static_cast<double>(y[base + j])) * s);
        else gi[base + j] = static_cast<T>(y[base + j] * (g[base + j] - s));
      }
    }
  });
}

void CpuBackend::cross_entropy_forward(const Tensor& loss, const Tensor& lse, const Tensor& logits,
                                       const Tensor& labels, const CrossEntropyOptions& o) {
  const int64_t N = logits.size(0), C = logits.size(1);
  cpu::visit_floating(logits.dtype(), "cross_entropy", [&]<class T>() {
    const T* x = cpu::ptr<T>(logits);
    const int64_t* labels_data = cpu::ptr<int64_t>(labels);
    const int64_t label_step = vector_stride(labels);
    T* l = cpu::ptr<T>(loss);
    T* s = cpu::ptr<T>(lse);
    for (int64_t i = 0; i < N; ++i) {
      const int64_t label = labels_data[i * label_step];
      const T* xr = x + i * C;
      T m = xr[0];
      for (int64_t j = 1; j < C; ++j) m = xr[j] > m ? xr[j] : m;
      double sum = 0.0, xsum = 0.0;
      for (int64_t j = 0; j < C; ++j) {
        sum += std::exp(static_cast<double>(xr[j] - m));
        xsum += static_cast<double>(xr[j]);
      }
      const double row_lse = static_cast<double>(m) + std::log(sum);
      s[i] = static_cast<T>(row_lse);
      if (label == o.ignore_index) {
        l[i] = T(0);
        continue;
      }
      if (label < 0 || label >= C)
        throw Error(detail::str_cat("cross_entropy: label ", label, " at row ", i, " is outside [0, ", C,
                                    ") (logits have ", C, " classes); fix the labels or pass ignore_index"));
      const double sm = o.label_smoothing;
      l[i] = static_cast<T>((1.0 - sm) * (row_lse - xr[label]) + sm * (row_lse - xsum / static_cast<double>(C)));
    }
  });
}

void CpuBackend::cross_entropy_backward(const Tensor& grad_logits, const Tensor& grad_loss, const Tensor& logits,
                                        const Tensor& lse, const Tensor& labels, const CrossEntropyOptions& o) {
  const int64_t N = logits.size(0), C = logits.size(1);
  cpu::visit_floating(logits.dtype(), "cross_entropy_backward", [&]<class T>() {
    const T* x = cpu::ptr<T>(logits);
    const T* g = cpu::ptr<T>(grad_loss);
    const T* s = cpu::ptr<T>(lse);
    const int64_t* y = cpu::ptr<int64_t>(labels);
    const int64_t g_step = vector_stride(grad_loss), s_step = vector_stride(lse), y_step = vector_stride(labels);
    T* gx = cpu::ptr<T>(grad_logits);
    const double sm = o.label_smoothing, off = sm / static_cast<double>(C);
    for (int64_t i = 0; i < N; ++i) {
      T* gr = gx + i * C;
      const int64_t label = y[i * y_step];
      if (label == o.ignore_index) {
        for (int64_t j = 0; j < C; ++j) gr[j] = T(0);
        continue;
      }
      const double gi = g[i * g_step], row_lse = s[i * s_step];
      for (int64_t j = 0; j < C; ++j) {
        const double p = std::exp(static_cast<double>(x[i * C + j]) - row_lse);
        const double target = (j == label ? 1.0 - sm : 0.0) + off;
        gr[j] = static_cast<T>((p - target) * gi);
      }
    }
  });
}

}  // namespace ember
