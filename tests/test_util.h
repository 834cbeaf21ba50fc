// Shared test helpers: seeded random inputs that are never all zeros, tolerance comparisons
// scaled to the dtype, and a finite-difference gradient check in f64.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "ember/ember.h"

namespace ember::test {

struct Tol {
  double atol;
  double rtol;
  static Tol for_dtype(DType dt) { return dt == DType::F64 ? Tol{1e-10, 1e-8} : Tol{1e-5, 1.3e-6 * 10}; }
};

// Values in [lo, hi) from a fixed seed.
inline Tensor uniform(const Shape& shape, double lo = -1.0, double hi = 1.0, DType dt = DType::F64,
                      uint64_t seed = 1234) {
  Generator g(seed);
  return add(mul(rand(shape, dt, &g), hi - lo), lo);
}

// Asserts |a - b| <= atol + rtol * |b| elementwise (NaN matches nothing).
inline ::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, Tol tol) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  for (size_t i = 0; i < x.size(); ++i) {
    const double err = std::abs(x[i] - y[i]);
    if (!(err <= tol.atol + tol.rtol * std::abs(y[i])))
      return ::testing::AssertionFailure() << "element " << i << ": " << x[i] << " vs " << y[i] << " (err " << err
                                           << ", atol " << tol.atol << ", rtol " << tol.rtol << ")";
  }
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult all_close(const Tensor& a, const std::vector<double>& expected, Tol tol) {
  return all_close(a, from_vector<double>(expected, a.shape()), tol);
}

// Expects `fn` to throw ember::Error whose message contains every part of `needles`.
template <class F>
::testing::AssertionResult throws_with(F&& fn, const std::vector<std::string>& needles) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& n : needles)
      if (msg.find(n) == std::string::npos)
        return ::testing::AssertionFailure() << "message \"" << msg << "\" lacks \"" << n << "\"";
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-ember exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace ember::test
