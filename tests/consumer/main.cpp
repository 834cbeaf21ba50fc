// ember_consumer: the README's example, checked: a matmul and its gradients against values worked by hand.
#include <ember/ember.h>

#include <cmath>
#include <iostream>
#include <vector>

namespace {

int failures = 0;

void expect_values(const char* what, const ember::Tensor& t, const std::vector<float>& expected) {
  const std::vector<float> got = t.to_vector<float>();
  bool ok = got.size() == expected.size();
  for (size_t i = 0; ok && i < got.size(); ++i)
    ok = std::abs(got[i] - expected[i]) <= 1e-5f * (1 + std::abs(expected[i]));
  std::cout << (ok ? "ok     " : "FAILED ") << what << " = " << t << "\n";
  if (!ok) ++failures;
}

void run(ember::Device device) {
  std::cout << "-- on " << device << "\n";
  const ember::TensorOptions tracked(ember::DType::F32, device, /*requires_grad=*/true);
  ember::Tensor a = ember::from_vector<float>({1, 2, 3, 4}, {2, 2}, tracked);
  ember::Tensor b = ember::from_vector<float>({5, 6, 7, 8}, {2, 2}, tracked);
  ember::Tensor c = ember::matmul(a, b);  // [[19, 22], [43, 50]]
  ember::Tensor loss = ember::sum(c);     // 134
  loss.backward();
  expect_values("a @ b", c, {19, 22, 43, 50});
  expect_values("sum(a @ b)", loss, {134});
  expect_values("d/da", a.grad(), {11, 15, 11, 15});  // ones(2, 2) @ bᵀ
  expect_values("d/db", b.grad(), {4, 4, 6, 6});      // aᵀ @ ones(2, 2)

  // Random inputs: the gradient of sum(x @ w) with respect to w is x's column sums, for every column of w.
  ember::manual_seed(7);
  ember::Tensor x = ember::randn({8, 4}, device);
  ember::Tensor w = ember::randn({4, 3}, tracked);
  ember::sum(ember::matmul(x, w)).backward();
  const std::vector<float> xv = x.to_vector<float>();
  std::vector<float> expected;
  for (int k = 0; k < 4; ++k) {
    float col = 0;
    for (int i = 0; i < 8; ++i) col += xv[i * 4 + k];
    expected.insert(expected.end(), 3, col);
  }
  expect_values("d sum(x @ w) / dw", w.grad(), expected);
}

}  // namespace

int main() {
  try {
    run(ember::Device::cpu());
    if (ember::cuda::is_available()) {
      run(ember::Device::cuda(0));
    } else {
      std::cout << "-- no CUDA device (CUDA backend " << (ember::cuda::is_compiled() ? "built" : "not built")
                << "): CPU only\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "ember_consumer: FAILED: " << e.what() << "\n";
    return 1;
  }
  std::cout << (failures ? "ember_consumer: FAILED\n" : "ember_consumer: ok\n");
  return failures ? 1 : 0;
}
