// ForwardingBackend: a decorator base that forwards every primitive of primitives.def to an inner
// backend through one hook, around(), so a profiler or a checker overrides one function to see
// (time, count, check) every primitive, and overrides a primitive itself only to read its arguments.
#pragma once
#include <type_traits>
#include <utility>

#include "cpp/backend/backend.h"

namespace ember {

// A reference to the call of the inner backend's primitive that around() wraps (not owning, no
// allocation: it lives on the forwarding function's stack).
class PrimitiveCall {
 public:
  template <class F> explicit PrimitiveCall(F& f) : object_(&f), call_([](void* o) { (*static_cast<F*>(o))(); }) {}
  void operator()() const { call_(object_); }

 private:
  void* object_;
  void (*call_)(void*);
};

class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(Backend& inner) : inner_(inner) {}
  Backend& inner() const { return inner_; }

  const char* name() const override { return inner_.name(); }
  bool supports(Primitive p) const override { return inner_.supports(p); }

  // Runs `call` (the inner backend's primitive `p`); a decorator does its work before and after,
  // and must run `call` exactly once, letting its exceptions through.
  virtual void around(Primitive, const PrimitiveCall& call) { call(); }

#define EMBER_PRIMITIVE(RET, NAME, PARAMS, ARGS, BACKENDS)                           \
  RET NAME PARAMS override {                                                         \
    return forward<RET>(Primitive::NAME, [&]() -> RET { return inner_.NAME ARGS; }); \
  }
#include "cpp/backend/primitives.def"
#undef EMBER_PRIMITIVE

 private:
  template <class R, class F> R forward(Primitive p, F&& f) {
    if constexpr (std::is_void_v<R>) {
      PrimitiveCall call(f);
      around(p, call);
    } else {
      R result{};
      auto store = [&] { result = f(); };
      PrimitiveCall call(store);
      around(p, call);
      return result;
    }
  }

  Backend& inner_;
};

}  // namespace ember
