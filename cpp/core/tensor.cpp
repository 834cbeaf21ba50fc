// Tensor: metadata, copies across devices and dtypes, reading values, printing, factories.
#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

#include "cpp/backend/backend.h"
#include "cpp/core/tensor_impl.h"

namespace ember {

// ---- construction helpers ----

bool compute_contiguous(const Shape& shape, const Shape& strides) {
  int64_t expected = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] == 1) continue;
    if (shape[i] == 0) return true;
    if (strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

std::shared_ptr<TensorImpl> make_impl(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset,
                                      DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = dtype;
  return impl;
}

static void check_shape(const Shape& shape, const char* op) {
  for (int64_t d : shape)
    EMBER_CHECK(d >= 0, op, ": negative dimension ", d, " in shape ", shape_str(shape));
}

Tensor make_empty(const Shape& shape, DType dtype, Device device) {
  check_shape(shape, "empty");
  Backend& backend = backend_for(device);
  const size_t nbytes = shape_nbytes(shape, dtype);  // throws for a shape no tensor can have
  const Shape strides = contiguous_strides(shape);
  void* data = backend.allocate(nbytes, device);  // throws OutOfMemory naming nbytes
  auto storage = std::make_shared<Storage>(data, nbytes, device, &backend);
  return Tensor(make_impl(std::move(storage), shape, strides, 0, dtype));
}

Tensor make_view(const Tensor& t, Shape shape, Shape strides, int64_t offset) {
  // A view adds no storage, but its shape must still have a countable size (expand can ask for
  // [2^62, 4] of a [1, 4] tensor); shape_numel throws naming it otherwise.
  (void)shape_numel(shape);
  return Tensor(make_impl(t.impl()->storage, std::move(shape), std::move(strides), offset, t.dtype()));
}

// ---- metadata ----

static TensorImpl& checked(const TensorImpl* impl) {
  if (!impl) throw Error("use of an undefined tensor (default-constructed Tensor); create it with a factory first");
  return *const_cast<TensorImpl*>(impl);
}

const Shape& Tensor::shape() const { return checked(impl_.get()).shape; }
const Shape& Tensor::strides() const { return checked(impl_.get()).strides; }
int64_t Tensor::offset() const { return checked(impl_.get()).offset; }
int64_t Tensor::dim() const { return static_cast<int64_t>(shape().size()); }
int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }
int64_t Tensor::numel() const { return shape_numel(shape()); }
DType Tensor::dtype() const { return checked(impl_.get()).dtype; }
Device Tensor::device() const { return checked(impl_.get()).storage->device; }
TensorOptions Tensor::options() const { return TensorOptions(dtype(), device()); }
bool Tensor::is_contiguous() const { return compute_contiguous(shape(), strides()); }
bool Tensor::shares_storage(const Tensor& o) const {
  return defined() && o.defined() && impl_->storage == o.impl_->storage;
}
void* Tensor::data_ptr() const { return checked(impl_.get()).data(); }
uint64_t Tensor::version() const { return checked(impl_.get()).storage->version.load(); }

template <class T>
T* Tensor::data() const {
  EMBER_CHECK(dtype() == dtype_of<T>, "data<", dtype_name(dtype_of<T>), ">: tensor has dtype ", dtype_name(dtype()),
              "; use to(DType) first");
  EMBER_CHECK(device().is_cpu(), "data<T>(): tensor is on ", device().str(), "; copy it to the CPU with .cpu() first");
  return static_cast<T*>(data_ptr());
}

// ---- copies ----

Tensor& Tensor::copy_(const Tensor& src) {
  EMBER_CHECK(src.defined(), "copy_: source tensor is undefined");
  autograd::check_inplace(*this, "copy_");
  Tensor s = src;
  if (s.shape() != shape()) {
    const Shape b = broadcast_shapes(shape(), s.shape(), "copy_");
    EMBER_CHECK(b == shape(), "copy_: source shape ", shape_str(s.shape()), " cannot be broadcast to destination shape ",
                shape_str(shape()));
    s = s.expand(shape());
  }
  if (s.device() == device()) {
    backend_for(device()).copy(*this, s);
  } else {
    // Cast on the source device, move contiguous bytes, then lay them out on this device.
    Tensor staged = s.detach().to(dtype()).contiguous();
    Tensor moved = is_contiguous() && !s.is_same(*this) ? *this : make_empty(shape(), dtype(), device());
    Backend& mover = device().is_cpu() ? backend_for(s.device()) : backend_for(device());
    mover.transfer(moved, staged);
    if (!moved.is_same(*this)) backend_for(device()).copy(*this, moved);
  }
  impl_->storage->version++;
  return *this;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor& Tensor::fill_(double value) {
  autograd::check_inplace(*this, "fill_");
  backend_for(device()).fill(*this, value);
  impl_->storage->version++;
  return *this;
}

Tensor& Tensor::zero_() { return fill_(0.0); }

// ---- reading values ----

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = detach().to(Device::cpu()).to(dtype_of<T>).contiguous();  // reading records nothing
  const T* p = static_cast<const T*>(c.data_ptr());
  return std::vector<T>(p, p + c.numel());
}

template <>
std::vector<bool> Tensor::to_vector<bool>() const {
  Tensor c = detach().to(Device::cpu()).to(DType::Bool).contiguous();
  const bool* p = static_cast<const bool*>(c.data_ptr());
  return std::vector<bool>(p, p + c.numel());
}

template <class T>
T Tensor::item() const {
  EMBER_CHECK(numel() == 1, "item(): tensor has ", numel(), " elements (shape ", shape_str(shape()),
              "); item() needs exactly one");
  return to_vector<T>()[0];
}

double Tensor::item() const { return item<double>(); }

#define EMBER_INSTANTIATE(T)                                  \
  template EMBER_API T* Tensor::data<T>() const;              \
  template EMBER_API T Tensor::item<T>() const;               \
  template EMBER_API std::vector<T> Tensor::to_vector<T>() const;
EMBER_INSTANTIATE(float)
EMBER_INSTANTIATE(double)
EMBER_INSTANTIATE(int64_t)
EMBER_INSTANTIATE(int32_t)
EMBER_INSTANTIATE(uint8_t)
template EMBER_API bool* Tensor::data<bool>() const;
template EMBER_API bool Tensor::item<bool>() const;
#undef EMBER_INSTANTIATE

// ---- printing ----

namespace {

void print_values(std::ostream& os, const Tensor& c, const std::vector<double>& v, int64_t dim, int64_t offset,
                  bool summarize, bool integral, int indent) {
  const Shape& shape = c.shape();
  const Shape& strides = c.strides();
  if (c.dim() == 0) {
    os << v[0];
    return;
  }
  const int64_t n = shape[dim];
  const int64_t edge = 3;
  os << '[';
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && n > 2 * edge && i == edge) {
      os << "...";
      i = n - edge - 1;
      os << (dim + 1 == c.dim() ? ", " : ",\n" + std::string(indent + 1, ' '));
      continue;
    }
    const int64_t off = offset + i * strides[dim];
    if (dim + 1 == c.dim()) {
      double x = v[off];
      if (integral) os << static_cast<int64_t>(x);
      else os << std::setprecision(4) << x;
    } else {
      print_values(os, c, v, dim + 1, off, summarize, integral, indent + 1);
    }
    if (i + 1 < n) os << (dim + 1 == c.dim() ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << ']';
}

}  // namespace

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "tensor(undefined)";
  os << "tensor(";
  if (t.dtype() == DType::BF16 || t.dtype() == DType::F16) {
    os << "<" << t.numel() << " values>";
  } else {
    Tensor c = t.to(Device::cpu()).contiguous();
    std::vector<double> v = c.to_vector<double>();
    print_values(os, c, v, 0, 0, t.numel() > 1000, !is_floating(t.dtype()), 7);
  }
  os << ", shape=" << shape_str(t.shape()) << ", dtype=" << dtype_name(t.dtype()) << ", device=" << t.device();
  if (t.requires_grad()) os << ", requires_grad=true";
  return os << ')';
}

// ---- factories ----

static Tensor finish(Tensor t, const TensorOptions& opts) {
  if (opts.requires_grad) t.requires_grad_(true);
  return t;
}

Tensor empty(const Shape& shape, const TensorOptions& opts) {
  return finish(make_empty(shape, opts.dtype, opts.device), opts);
}

Tensor full(const Shape& shape, double value, const TensorOptions& opts) {
  Tensor t = make_empty(shape, opts.dtype, opts.device);
  backend_for(opts.device).fill(t, value);
  return finish(t, opts);
}
Tensor zeros(const Shape& shape, const TensorOptions& opts) { return full(shape, 0.0, opts); }
Tensor ones(const Shape& shape, const TensorOptions& opts) { return full(shape, 1.0, opts); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.options()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.options()); }
Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.options()); }
Tensor full_like(const Tensor& t, double value) { return full(t.shape(), value, t.options()); }

Tensor arange(double start, double end, double step, const TensorOptions& opts) {
  EMBER_CHECK(step != 0.0 && std::isfinite(step) && std::isfinite(start) && std::isfinite(end),
              "arange: step must be finite and non-zero, bounds finite (got start ", start, ", end ", end, ", step ",
              step, ")");
  EMBER_CHECK((end - start) / step >= 0 || start == end, "arange: step ", step, " moves away from end ", end,
              " (start ", start, ")");
  // The count is checked as a double first: casting one beyond int64_t's range is undefined. Past
  // 2^53 consecutive values are no longer distinct doubles, so that is the limit.
  const double count = std::max(0.0, std::ceil((end - start) / step));
  EMBER_CHECK(count <= 9007199254740992.0, "arange: [", start, ", ", end, ") in steps of ", step, " has ", count,
              " values, more than 2^53 (where doubles stop being distinct); use a larger step or a smaller range");
  const auto n = static_cast<int64_t>(count);
  Tensor host = make_empty({n}, DType::F64, Device::cpu());  // an OutOfMemory error, not std::bad_alloc
  double* v = host.data<double>();
  for (int64_t i = 0; i < n; ++i) v[i] = start + static_cast<double>(i) * step;
  return finish(host.to(opts.dtype).to(opts.device), opts);
}

Tensor arange(int64_t end, const TensorOptions& opts) { return arange(0.0, static_cast<double>(end), 1.0, opts); }

template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, const TensorOptions& opts) {
  check_shape(shape, "from_vector");
  EMBER_CHECK(shape_numel(shape) == static_cast<int64_t>(values.size()), "from_vector: ", values.size(),
              " values do not fill shape ", shape_str(shape), " (", shape_numel(shape), " elements)");
  Tensor host = make_empty(shape, dtype_of<T>, Device::cpu());
  T* p = static_cast<T*>(host.data_ptr());
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  Tensor t = host.to(opts.device);
  return finish(t, opts);
}
template EMBER_API Tensor from_vector<float>(const std::vector<float>&, const Shape&, const TensorOptions&);
template EMBER_API Tensor from_vector<double>(const std::vector<double>&, const Shape&, const TensorOptions&);
template EMBER_API Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, const TensorOptions&);
template EMBER_API Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, const TensorOptions&);
template EMBER_API Tensor from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&, const TensorOptions&);
template EMBER_API Tensor from_vector<bool>(const std::vector<bool>&, const Shape&, const TensorOptions&);

Tensor from_blob(void* data, const Shape& shape, DType dtype) {
  check_shape(shape, "from_blob");
  EMBER_CHECK(data != nullptr || shape_numel(shape) == 0, "from_blob: null data for shape ", shape_str(shape));
  const size_t nbytes = shape_nbytes(shape, dtype);
  auto storage = std::make_shared<Storage>(data, nbytes, Device::cpu(), nullptr);
  return Tensor(make_impl(std::move(storage), shape, contiguous_strides(shape), 0, dtype));
}

static Tensor random_tensor(const Shape& shape, const TensorOptions& opts, Generator* gen, RandomParams p) {
  Tensor t = make_empty(shape, opts.dtype, opts.device);
  Generator& g = gen ? *gen : default_generator();
  p.seed = g.seed();
  p.offset = g.advance(static_cast<uint64_t>(t.numel()));
  p.generator = &g;
  backend_for(opts.device).random(t, p);
  return finish(t, opts);
}

Tensor rand(const Shape& shape, const TensorOptions& opts, Generator* gen) {
  EMBER_CHECK(is_floating(opts.dtype), "rand: dtype must be floating, got ", dtype_name(opts.dtype));
  return random_tensor(shape, opts, gen, {RandomKind::Uniform, 0.0, 1.0});
}

Tensor randn(const Shape& shape, const TensorOptions& opts, Generator* gen) {
  EMBER_CHECK(is_floating(opts.dtype), "randn: dtype must be floating, got ", dtype_name(opts.dtype));
  return random_tensor(shape, opts, gen, {RandomKind::Normal, 0.0, 1.0});
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, const TensorOptions& opts, Generator* gen) {
  EMBER_CHECK(high > low, "randint: high (", high, ") must be greater than low (", low, ")");
  EMBER_CHECK(opts.dtype != DType::Bool, "randint: dtype bool is not an integer range type");
  return random_tensor(shape, opts, gen,
                       {RandomKind::Int, static_cast<double>(low), static_cast<double>(high)});
}

}  // namespace ember
