// Lookups into the generated op lists (unary_ops.def, binary_ops.def), the errors of a backend
// switch that meets a value outside its enum, and of a primitive a backend does not implement.
#include "cpp/backend/backend.h"

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
  }
  throw_unhandled("gemm", "Epilogue", static_cast<int>(e), backend);
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
