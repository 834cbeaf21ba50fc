// Lookups into the generated op lists (unary_ops.def, binary_ops.def), the errors of a backend
// switch that meets a value outside its enum, of a primitive a backend does not implement, and the
// ReLU-mask epilogues' argument check.
#include "cpp/backend/backend.h"
#include "cpp/backend/relu_mask.h"

namespace ember {
namespace {

template <class Op>
int checked_index(Op op, int count, const char* list, const char* backend) {
  const int i = static_cast<int>(op);
  if (i < 0 || i >= count)
    throw Error(detail::str_cat(list, ": op value ", i, " is not in ", list, ".def (", count,
                                " ops) and has no kernel on backend ", backend,
                                "; pass a value of the enum, generated from that list"));
  return i;
}

}  // namespace

void throw_unhandled(const char* primitive, const char* enum_name, int value, const char* backend) {
  throw Error(detail::str_cat(primitive, ": ", enum_name, " value ", value, " is not an enumerator backend ", backend,
                              " knows; pass one of the enum's named values"));
}

EpilogueParts epilogue_parts(Epilogue e, const char* backend) {
  switch (e) {
    case Epilogue::None: return {};
    case Epilogue::Bias: return {.bias = true};
    case Epilogue::Relu: return {.relu = true};
    case Epilogue::BiasRelu: return {.bias = true, .relu = true};
    case Epilogue::BiasGradA: return {.bias_grad = true};
    case Epilogue::BiasReluNanToZero: return {.bias = true, .relu = true, .nan_to_zero = true};
    case Epilogue::BiasReluNanToZeroMask:
      return {.bias = true, .relu = true, .nan_to_zero = true, .relu_mask_out = true};
    case Epilogue::DReluBiasGrad: return {.relu_mask_in = true, .bias_grad_out = true};
  }
  throw_unhandled("gemm", "Epilogue", static_cast<int>(e), backend);
}

void check_relu_mask_args(const Tensor& out, const GemmOptions& o, const char* backend) {
  EMBER_CHECK(out.dim() == 2, "gemm (", backend, "): the ReLU-mask epilogues need a 2-D output, got shape ",
              shape_str(out.shape()), "; reshape the batch into the rows");
  const int64_t rows = out.size(0), n = out.size(1), ld = relu_mask::row_bytes(n);
  const Tensor& m = o.relu_mask;
  EMBER_CHECK(m.defined() && m.dtype() == DType::U8 && m.dim() == 2 && m.size(0) == rows && m.size(1) == ld &&
                  m.is_contiguous() && m.device() == out.device(),
              "gemm (", backend, "): the ReLU mask of an output of shape ", shape_str(out.shape()),
              " must be a contiguous u8 tensor of shape [", rows, ", ", ld, "] on ", out.device().str(), ", got ",
              m.defined() ? dtype_name(m.dtype()) + std::string(" ") + shape_str(m.shape()) + " on " + m.device().str()
                          : std::string("none"));
  if (epilogue_parts(o.epilogue, backend).bias_grad_out)
    EMBER_CHECK(o.bias_grad.defined() && o.bias_grad.dim() == 1 && o.bias_grad.size(0) == n &&
                    o.bias_grad.dtype() == out.dtype() && o.bias_grad.device() == out.device(),
                "gemm (", backend, "): DReluBiasGrad writes a bias gradient of shape [", n, "] (", dtype_name(out.dtype()),
                "), got ", o.bias_grad.defined() ? shape_str(o.bias_grad.shape()) : std::string("none"));
}

void throw_unsupported_primitive(Primitive p, const char* backend) {
  throw Error(detail::str_cat(primitive_name(p), ": the ", backend, " backend does not implement this primitive (",
                              backend, " supports(Primitive::", primitive_name(p),
                              ") is false); run the op on the CPU: x.cpu(), then move the result back with "
                              ".to(device)"));
}

int op_index(UnaryOp op, const char* backend) { return checked_index(op, kUnaryOpCount, "unary_ops", backend); }
int op_index(BinaryOp op, const char* backend) { return checked_index(op, kBinaryOpCount, "binary_ops", backend); }

}  // namespace ember
