// nn::Module: registration and dotted names, state_dict loading with checked keys and shapes,
// train/eval, moving in place, apply, the printed tree and the per-layer summary.
#include <algorithm>
#include <array>
#include <iomanip>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "cpp/core/tensor_impl.h"
#include "cpp/core/text_brief.h"
#include "ember/autograd.h"
#include "cpp/nn/nn_internal.h"
#include "ember/nn.h"
#include "ember/profile.h"

namespace ember::nn {
namespace {
// 0: floating, 1: integer, 2: bool. load_state_dict converts within a kind only.
int dtype_kind(DType dt) { return is_floating(dt) ? 0 : dt == DType::Bool ? 2 : 1; }
}  // namespace

namespace {

// The summary in progress on this thread: which modules to report (by address, with their dotted
// names) and one row per call, in call order.
struct SummaryRow {
  std::string name;
  std::string type;
  Shape output_shape;
  int64_t params = 0;
  bool finished = false;
};
struct SummaryRecorder {
  std::unordered_map<const Module*, std::string> names;
  std::vector<SummaryRow> rows;
};
thread_local SummaryRecorder* g_recorder = nullptr;

// Names cut to 64 characters and at most 20 of them: the keys may come from a hostile file.
std::string quoted_list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < 20; ++i) out += (i ? ", \"" : "\"") + detail::cut_brief(items[i]) + "\"";
  if (items.size() > 20) out += detail::str_cat(" (and ", items.size() - 20, " more)");
  return out;
}

std::string prefixed(const std::string& prefix, const std::string& name) {
  if (prefix.empty()) return name;
  return name.empty() ? prefix : prefix + "." + name;
}

// Points `t`'s TensorImpl at `moved`'s storage and geometry, so every handle sharing the impl
// (the module's member, the optimizer's list) sees the moved tensor, as PyTorch's param.data = ...
void replace_in_place(const Tensor& t, const Tensor& moved) {
  if (moved.is_same(t)) return;
  TensorImpl& impl = *t.impl();
  impl.storage = moved.impl()->storage;
  impl.shape = moved.shape();
  impl.strides = moved.strides();
  impl.offset = moved.offset();
  impl.dtype = moved.dtype();
}

}  // namespace

bool summary_running() { return g_recorder != nullptr; }

Module::~Module() = default;

Tensor Module::forward(const Tensor&) {
  throw Error(detail::str_cat(type_name(), "::forward: this module defines no forward(input); override forward() "
                              "in the subclass, or call its submodules directly"));
}

Tensor Module::operator()(const Tensor& input) {
  profile::Range range(type_name().c_str());
  SummaryRecorder* rec = g_recorder;
  if (!rec) return forward(input);
  auto it = rec->names.find(this);
  if (it == rec->names.end()) return forward(input);
  // The row is made before the call so that rows come in call order, parents before children.
  const size_t row = rec->rows.size();
  int64_t own = 0;
  for (const Param& p : params_) own += p.tensor.numel();
  rec->rows.push_back({it->second, type_name(), {}, own, false});
  Tensor out = forward(input);
  rec->rows[row].output_shape = out.shape();
  rec->rows[row].finished = true;
  return out;
}

void Module::check_new_name(const std::string& name, const char* what) const {
  EMBER_CHECK(!name.empty(), type_name(), ": ", what, " name is empty; give it a name such as \"weight\"");
  EMBER_CHECK(name.find('.') == std::string::npos, type_name(), ": ", what, " name \"", name,
              "\" contains '.', which separates nested names; use '_' instead");
  auto taken = [&](const std::string& n) {
    for (const Param& p : params_)
      if (p.name == n) return "a parameter";
    for (const Buffer& b : buffers_)
      if (b.name == n) return "a buffer";
    for (const auto& c : children_)
      if (c.first == n) return "a submodule";
    return static_cast<const char*>(nullptr);
  };
  if (const char* kind = taken(name))
    throw Error(detail::str_cat(type_name(), ": cannot register ", what, " \"", name, "\": ", kind,
                                " of that name already exists; pick another name"));
}

Tensor Module::register_parameter(const std::string& name, Tensor tensor, bool requires_grad) {
  check_new_name(name, "parameter");
  EMBER_CHECK(tensor.defined(), type_name(), ": register_parameter(\"", name,
              "\"): the tensor is undefined; create it with a factory first");
  EMBER_CHECK(tensor.dtype() == DType::F32 || tensor.dtype() == DType::F64 || tensor.dtype() == DType::BF16 ||
                  tensor.dtype() == DType::F16,
              type_name(), ": register_parameter(\"", name, "\"): parameters must be floating, got ",
              dtype_name(tensor.dtype()), "; register integer state with register_buffer");
  EMBER_CHECK(tensor.is_leaf(), type_name(), ": register_parameter(\"", name, "\"): the tensor was computed by ",
              tensor.grad_fn()->name(), "; a parameter must be a leaf, so pass tensor.detach()");
  tensor.requires_grad_(requires_grad);
  params_.push_back({name, tensor});
  return tensor;
}

Tensor Module::register_buffer(const std::string& name, Tensor tensor, bool persistent) {
  check_new_name(name, "buffer");
  EMBER_CHECK(tensor.defined(), type_name(), ": register_buffer(\"", name,
              "\"): the tensor is undefined; create it with a factory first");
  buffers_.push_back({name, tensor, persistent});
  return tensor;
}

void Module::register_module_impl(const std::string& name, std::shared_ptr<Module> module) {
  check_new_name(name, "submodule");
  EMBER_CHECK(module != nullptr, type_name(), ": register_module(\"", name, "\"): the module pointer is null");
  EMBER_CHECK(module.get() != this, type_name(), ": register_module(\"", name,
              "\"): a module cannot contain itself");
  children_.emplace_back(name, std::move(module));
}

// Calls visit(dotted_name, tensor, kind) for params (kind 0) and buffers (1 persistent, 2 not),
// this module's first, then each child's in order.
template <class Visit>
void Module::visit_named(const std::string& prefix, bool recurse, Visit&& visit) const {
  for (const Param& p : params_) visit(prefixed(prefix, p.name), p.tensor, 0);
  for (const Buffer& b : buffers_) visit(prefixed(prefix, b.name), b.tensor, b.persistent ? 1 : 2);
  if (!recurse) return;
  for (const auto& [name, child] : children_) child->visit_named(prefixed(prefix, name), true, visit);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::unordered_set<const TensorImpl*> seen;
  visit_named("", recurse, [&](const std::string& n, const Tensor& t, int kind) {
    if (kind == 0 && seen.insert(t.impl()).second) out.emplace_back(n, t);
  });
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::unordered_set<const TensorImpl*> seen;
  visit_named("", recurse, [&](const std::string& n, const Tensor& t, int kind) {
    if (kind != 0 && seen.insert(t.impl()).second) out.emplace_back(n, t);
  });
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_buffers(recurse)) out.push_back(t);
  return out;
}

std::vector<std::shared_ptr<Module>> Module::children() const {
  std::vector<std::shared_ptr<Module>> out;
  for (const auto& c : children_) out.push_back(c.second);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out;
  for (auto& [n, m] : std::as_const(*this).named_modules()) out.emplace_back(n, const_cast<Module*>(m));
  return out;
}

std::vector<std::pair<std::string, const Module*>> Module::named_modules() const {
  std::vector<std::pair<std::string, const Module*>> out{{"", this}};
  for (const auto& [name, child] : children_)
    for (auto& [sub, m] : std::as_const(*child).named_modules()) out.emplace_back(prefixed(name, sub), m);
  return out;
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (const Tensor& p : parameters())
    if (!trainable_only || p.requires_grad()) n += p.numel();
  return n;
}

StateDict Module::state_dict() const {
  StateDict out;
  visit_named("", true, [&](const std::string& n, const Tensor& t, int kind) {
    if (kind != 2) out.emplace_back(n, t.detach());
  });
  return out;
}

LoadResult Module::load_state_dict(const StateDict& state, bool strict) {
  // Check everything first, so a failed load leaves the module as it was.
  std::unordered_map<std::string, const Tensor*> given;
  std::vector<std::string> errors;
  for (const auto& [name, t] : state) {
    if (!given.emplace(name, &t).second) errors.push_back("key \"" + name + "\" appears twice in the state dict");
    else if (!t.defined()) errors.push_back("key \"" + name + "\" holds an undefined tensor");
  }
  StateDict own = state_dict();
  LoadResult result;
  std::vector<std::string> mismatched;
  std::unordered_set<std::string> own_names;
  for (const auto& [name, t] : own) {
    own_names.insert(name);
    auto it = given.find(name);
    if (it == given.end()) {
      result.missing_keys.push_back(name);
    } else if (it->second->defined() && it->second->shape() != t.shape()) {
      mismatched.push_back("size mismatch for \"" + detail::cut_brief(name) + "\": the state dict has shape " +
                           shape_str(it->second->shape()) + ", the module has " + shape_str(t.shape()));
    } else if (it->second->defined() && dtype_kind(it->second->dtype()) != dtype_kind(t.dtype())) {
      // Floating values convert between precisions; a float read as an integer (or bool) is not a
      // conversion but a damaged or foreign file, so it is refused rather than cast.
      mismatched.push_back("dtype mismatch for \"" + detail::cut_brief(name) + "\": the state dict has " +
                           dtype_name(it->second->dtype()) + ", the module has " + dtype_name(t.dtype()));
    }
  }
  for (const auto& [name, t] : state)
    if (!own_names.count(name)) result.unexpected_keys.push_back(name);
  std::ostringstream msg;
  const bool key_errors = strict && (!result.missing_keys.empty() || !result.unexpected_keys.empty());
  if (key_errors || !mismatched.empty() || !errors.empty()) {
    msg << "load_state_dict: error(s) loading the state dict into " << type_name() << ":";
    if (strict && !result.missing_keys.empty()) msg << "\n  missing key(s): " << quoted_list(result.missing_keys);
    if (strict && !result.unexpected_keys.empty()) msg << "\n  unexpected key(s): " << quoted_list(result.unexpected_keys);
    for (size_t k = 0; k < mismatched.size() && k < 20; ++k) msg << "\n  " << mismatched[k];
    if (mismatched.size() > 20) msg << "\n  (and " << mismatched.size() - 20 << " more mismatched keys)";
    for (const std::string& e : errors) msg << "\n  " << e;
    msg << "\nThe state dict must come from a module of the same architecture";
    if (key_errors) msg << "; strict=false loads only the matching keys";
    if (!mismatched.empty()) msg << "; mis-shaped or mis-typed keys are errors even with strict=false";
    throw Error(msg.str());
  }
  autograd::NoGradGuard no_grad;
  for (auto& [name, t] : own) {
    auto it = given.find(name);
    if (it == given.end()) continue;
    Tensor dst = t;
    dst.copy_(*it->second);
  }
  return result;
}

Module& Module::train(bool on) {
  training_ = on && !frozen_;
  for (auto& c : children_) c.second->train(training_);
  return *this;
}

Module& Module::requires_grad_(bool on) {
  for (Tensor& p : parameters()) p.requires_grad_(on);
  return *this;
}

Module& Module::freeze(bool on) {
  requires_grad_(!on);
  for (auto& [name, m] : named_modules()) m->frozen_ = on;
  if (on) train(false);
  return *this;
}

void Module::replace_module_impl(const std::string& name, std::shared_ptr<Module> module) {
  EMBER_CHECK(module != nullptr, type_name(), ": replace_module(\"", name, "\"): the module pointer is null");
  EMBER_CHECK(module.get() != this, type_name(), ": replace_module(\"", name, "\"): a module cannot contain itself");
  for (auto& [n, child] : children_)
    if (n == name) {
      child = std::move(module);
      return;
    }
  std::vector<std::string> names;
  for (const auto& c : children_) names.push_back(c.first);
  throw Error(detail::str_cat(type_name(), ": replace_module(\"", detail::cut_brief(name), "\"): no submodule of that name (",
                              names.empty() ? std::string("it has none") : "it has " + quoted_list(names),
                              "); register_module adds a new one"));
}

Module& Module::to(Device device) {
  autograd::NoGradGuard no_grad;
  auto move = [&](const std::string&, const Tensor& t, int) {
    replace_in_place(t, t.to(device));
    if (t.impl()->grad.defined()) t.impl()->grad = t.impl()->grad.to(device);
  };
  visit_named("", true, move);
  return *this;
}

Module& Module::to(DType dtype) {
  EMBER_CHECK(is_floating(dtype), type_name(), ".to(", dtype_name(dtype),
              "): modules convert only to a floating dtype (their integer buffers keep theirs)");
  autograd::NoGradGuard no_grad;
  visit_named("", true, [&](const std::string&, const Tensor& t, int) {
    if (!is_floating(t.dtype())) return;
    replace_in_place(t, t.to(dtype));
    if (t.impl()->grad.defined()) t.impl()->grad = t.impl()->grad.to(dtype);
  });
  return *this;
}

void Module::zero_grad(bool set_to_none) {
  for (Tensor& p : parameters()) {
    if (!p.grad().defined()) continue;
    if (set_to_none) {
      p.zero_grad();
    } else {
      Tensor g = p.grad();
      g.zero_();
    }
  }
}

Module& Module::apply(const std::function<void(Module&)>& fn) {
  EMBER_CHECK(fn != nullptr, type_name(), ".apply: the function is empty");
  for (auto& c : children_) c.second->apply(fn);
  fn(*this);
  return *this;
}

void Module::repr_into(std::ostream& os, int indent) const {
  os << type_name() << '(' << extra_repr();
  if (children_.empty()) {
    os << ')';
    return;
  }
  if (!extra_repr().empty()) os << '\n' << std::string(indent + 2, ' ');
  for (const auto& [name, child] : children_) {
    os << '\n' << std::string(indent + 2, ' ') << '(' << name << "): ";
    child->repr_into(os, indent + 2);
  }
  os << '\n' << std::string(indent, ' ') << ')';
}

std::string Module::repr() const {
  std::ostringstream os;
  repr_into(os, 0);
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Module& m) { return os << m.repr(); }

std::string Module::summary(const Shape& input_shape) {
  TensorOptions opts;
  std::vector<Tensor> ps = parameters();
  if (!ps.empty()) opts = TensorOptions(ps[0].dtype(), ps[0].device());
  return summary(zeros(input_shape, opts));
}

std::string Module::summary(const Tensor& example_input) {
  EMBER_CHECK(example_input.defined(), type_name(), ".summary: the example input is undefined");
  EMBER_CHECK(g_recorder == nullptr, type_name(), ".summary: another summary is running on this thread");
  SummaryRecorder rec;
  for (auto& [name, m] : std::as_const(*this).named_modules())
    if (!name.empty()) rec.names.emplace(m, name);
  Tensor out;
  {
    struct Reset {
      ~Reset() { g_recorder = nullptr; }
    } reset;
    g_recorder = &rec;
    autograd::NoGradGuard no_grad;
    out = forward(example_input);
  }
  std::vector<std::array<std::string, 4>> table{{"Layer", "Type", "Output shape", "Param #"}};
  for (const SummaryRow& r : rec.rows)
    table.push_back({r.name, r.type, r.finished ? shape_str(r.output_shape) : "?", std::to_string(r.params)});
  std::array<size_t, 4> width{};
  for (const auto& row : table)
    for (size_t c = 0; c < 4; ++c) width[c] = std::max(width[c], row[c].size());
  size_t total_width = 0;
  for (size_t w : width) total_width += w + 2;
  std::ostringstream os;
  os << type_name() << " summary for input " << shape_str(example_input.shape()) << " ("
     << dtype_name(example_input.dtype()) << ", " << example_input.device() << ")\n";
  const std::string rule(total_width, '='), thin(total_width, '-');
  os << rule << '\n';
  for (size_t i = 0; i < table.size(); ++i) {
    for (size_t c = 0; c < 4; ++c) {
      if (c == 3) os << std::setw(static_cast<int>(width[c])) << std::right << table[i][c];
      else os << std::setw(static_cast<int>(width[c])) << std::left << table[i][c] << "  ";
    }
    os << '\n';
    if (i == 0) os << thin << '\n';
  }
  const int64_t total = num_parameters(), trainable = num_parameters(true);
  os << rule << '\n'
     << "Output shape: " << shape_str(out.shape()) << '\n'
     << "Total params: " << total << '\n'
     << "Trainable params: " << trainable << '\n'
     << "Non-trainable params: " << total - trainable << '\n';
  return os.str();
}

}  // namespace ember::nn
