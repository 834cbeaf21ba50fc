// The CUDA backend: backend.h's primitives on device-resident tensors (kernels in cuda/kernels,
// GEMM through cuBLASLt in cuda/blas.cpp), each queued on its device's compute stream.
#pragma once
#include "cpp/backend/backend.h"
#include "cpp/core/tensor_impl.h"

namespace ember {

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  void* allocate(size_t nbytes, Device device) override;
  void deallocate(void* ptr, size_t nbytes, Device device) override;
  void synchronize(Device device) override;
  void fill(const Tensor& out, double value) override;
  void copy(const Tensor& dst, const Tensor& src) override;
  void transfer(const Tensor& dst, const Tensor& src) override;
  void random(const Tensor& out, const RandomParams& p) override;
  void unary(UnaryOp op, const Tensor& out, const Tensor& in, const ElementwiseParams& p) override;
  void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b, const ElementwiseParams& p) override;
  void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) override;
  void reduce(ReduceOp op, const Tensor& out, const Tensor& in, int64_t outer, int64_t n, int64_t inner) override;
  void gemm(const Tensor& out, const Tensor& a, const Tensor& b, const GemmOptions& o) override;
  void softmax(const Tensor& out, const Tensor& in, bool log) override;
  void softmax_backward(const Tensor& grad_in, const Tensor& grad_out, const Tensor& out, bool log) override;
  void cross_entropy_forward(const Tensor& loss, const Tensor& lse, const Tensor& logits, const Tensor& labels,
                             const CrossEntropyOptions& o) override;
  void cross_entropy_backward(const Tensor& grad_logits, const Tensor& grad_loss, const Tensor& logits,
                              const Tensor& lse, const Tensor& labels, const CrossEntropyOptions& o) override;
  void check_index(const Tensor& index, const IndexCheck& c) override;
  void index_select(const Tensor& out, const Tensor& in, const Tensor& index, int64_t outer, int64_t n,
                    int64_t inner) override;
  void index_add(const Tensor& out, const Tensor& src, const Tensor& index, int64_t outer, int64_t n,
                 int64_t inner) override;
  // Every parameter of one optimizer step in one launch (cuda/kernels/optim.cu).
  void optimizer_step(const OptimizerStep& s) override;
  // The data pipeline (cuda/kernels/data.cu): a permutation by CUB's radix sort of Philox keys, and a
  // batch gathered, augmented and normalised by one kernel.
  void random_permutation(const Tensor& out, uint64_t seed, uint64_t counter) override;
  void gather_batch(const Tensor& x, const Tensor& y, const Tensor& images, const Tensor& labels, const Tensor& order,
                    const BatchParams& p) override;
  // ---- convolution (conv primitives block): cuDNN, in cuda/dnn.cpp ----
  void conv2d_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& bias,
                      const ConvParams& p) override;
  void conv2d_backward_data(const Tensor& dx, const Tensor& dy, const Tensor& w, const ConvParams& p) override;
  void conv2d_backward_weight(const Tensor& dw, const Tensor& db, const Tensor& dy, const Tensor& x,
                              const ConvParams& p) override;
  // ---- end of the conv primitives block ----

 private:
  // The GEMM's epilogues done as separate kernels, for the cases cuBLASLt cannot fuse (blas.cpp).
  void gemm_epilogue_fallback(const Tensor& out, const Tensor& a, const GemmOptions& o, bool bias_relu,
                              bool bias_grad);
};

}  // namespace ember
