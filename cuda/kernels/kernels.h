// The kernel launchers, one family per .cu file: (out, inputs..., sizes..., stream). Each checks
// nothing the op layer already checked, dispatches on dtype and queues its kernels on `stream`
// (the current device must be the tensors' device).
#pragma once
#include <cuda_runtime_api.h>

#include "cpp/backend/backend.h"
#include "cuda/runtime.h"

namespace ember::cuda::kernels {

// fill_copy.cu
void fill(const Tensor& out, double value, cudaStream_t stream);
void copy(const Tensor& dst, const Tensor& src, cudaStream_t stream);
// state: null for an eager fill (seed and counter from p); in a captured fill the generator's
// device state (runtime.h's CapturedRandom), and p.offset is relative to its counter base.
void random(const Tensor& out, const RandomParams& p, cudaStream_t stream, const uint64_t* state = nullptr);
// A generator's device state (context.h's RngDeviceState): set to (seed, offset), or its counter
// advanced by n (a captured graph's last node). One thread each, values in the arguments.
void rng_state_set(uint64_t* state, uint64_t seed, uint64_t offset, cudaStream_t stream);
void rng_state_advance(uint64_t* state, uint64_t n, cudaStream_t stream);

// elementwise.cu
void unary(UnaryOp op, const Tensor& out, const Tensor& in, const ElementwiseParams& p, cudaStream_t stream);
void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b, const ElementwiseParams& p,
            cudaStream_t stream);
void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b, cudaStream_t stream);

// reduce.cu
void reduce(ReduceOp op, const Tensor& out, const Tensor& in, int64_t outer, int64_t n, int64_t inner,
            cudaStream_t stream);

// relu_mask.cu: the ReLU bit mask (cpp/backend/relu_mask.h) of a 2-D out written into mask, or
// applied to out (out = 0 where the bit is 0): the GEMM's mask epilogues where cuBLASLt fuses none.
void relu_mask_write(const Tensor& mask, const Tensor& out, cudaStream_t stream);
void relu_mask_apply(const Tensor& out, const Tensor& mask, cudaStream_t stream);

// softmax.cu
void softmax(const Tensor& out, const Tensor& in, bool log, cudaStream_t stream);
void softmax_backward(const Tensor& grad_in, const Tensor& grad_out, const Tensor& out, bool log, cudaStream_t stream);
void cross_entropy_forward(const Tensor& loss, const Tensor& lse, const Tensor& logits, const Tensor& labels,
                           const CrossEntropyOptions& o, cudaStream_t stream);
void cross_entropy_backward(const Tensor& grad_logits, const Tensor& grad_loss, const Tensor& logits,
                            const Tensor& lse, const Tensor& labels, const CrossEntropyOptions& o, cudaStream_t stream);

// index.cu
void check_index(const Tensor& index, const IndexCheck& c, const DeviceChecks& checks, cudaStream_t stream);
void index_select(const Tensor& out, const Tensor& in, const Tensor& index, int64_t outer, int64_t n, int64_t inner,
                  cudaStream_t stream);
void index_add(const Tensor& out, const Tensor& src, const Tensor& index, int64_t outer, int64_t n, int64_t inner,
               cudaStream_t stream);

// ---- pooling and normalisation (begin poolnorm block) ----
// pool.cu
void pool2d_forward(const Tensor& out, const Tensor& indices, const Tensor& in, const PoolParams& p,
                    cudaStream_t stream);
void pool2d_backward(const Tensor& grad_in, const Tensor& grad_out, const Tensor& indices, const PoolParams& p,
                     cudaStream_t stream);
// norm.cu
void norm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x, const Tensor& weight,
                  const Tensor& bias, const Tensor& running_mean, const Tensor& running_var, const NormParams& p,
                  cudaStream_t stream);
void norm_backward(const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias, const Tensor& grad_out,
                   const Tensor& x, const Tensor& mean, const Tensor& rstd, const Tensor& weight, const NormParams& p,
                   cudaStream_t stream);
// ---- end poolnorm block ----

// int8.cu (ember::quant's device path; the GEMM itself is cuBLASLt's, in cuda/int8_gemm.cpp)
void int8_quantize(const Tensor& out, const Tensor& in, const Int8QuantizeParams& p, cudaStream_t stream);
void int8_im2col(const Tensor& out, const Tensor& in, const Int8Im2colParams& p, cudaStream_t stream);
// out from cuBLASLt's int32 accumulators acc [M, n_pad] (Int8GemmParams' epilogue).
void int8_epilogue(const Tensor& out, const Tensor& acc, const Int8GemmParams& p, cudaStream_t stream);
void int8_max_pool(const Tensor& out, const Tensor& in, int64_t kernel, cudaStream_t stream);

}  // namespace ember::cuda::kernels
