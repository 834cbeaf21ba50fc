// ember-smoke: picks ember's device, runs a small forward and backward pass, prints it and checks the gradient.
#include <algorithm>
#include <cmath>
#include <exception>
#include <iostream>
#include <vector>

#include "ember/ember.h"

int main() {
  try {
    ember::Device device = ember::Device::cpu();
    if (ember::cuda::is_available()) {
      device = ember::Device::cuda(0);
      std::cout << "ember: device " << device << " (" << ember::cuda::device_count() << " CUDA device(s))\n";
    } else {
      std::cout << "ember: device cpu ("
                << (ember::cuda::is_compiled() ? "CUDA backend built, but no CUDA device is available"
                                               : "this libember was built without the CUDA backend")
                << ")\n";
    }

    ember::manual_seed(42);
    ember::Tensor x = ember::randn({4, 3}, device);
    ember::Tensor w = ember::randn({3, 2}, ember::TensorOptions(ember::DType::F32, device, /*requires_grad=*/true));
    ember::Tensor y = ember::relu(ember::matmul(x, w));
    ember::Tensor loss = ember::sum(y);
    loss.backward();

    std::cout << "x =\n"
              << x << "\nrelu(x @ w) =\n"
              << y << "\nloss = sum(relu(x @ w)) = " << loss.item() << "\ndloss/dw =\n"
              << w.grad() << "\n";

    // The gradient by hand: dloss/dw[k][j] = sum_i x[i][k] * (y[i][j] > 0).
    const std::vector<float> xv = x.to_vector<float>(), yv = y.to_vector<float>();
    const std::vector<float> gv = w.grad().to_vector<float>();
    double worst = 0.0;
    for (int k = 0; k < 3; ++k) {
      for (int j = 0; j < 2; ++j) {
        double expect = 0.0;
        for (int i = 0; i < 4; ++i) expect += yv[i * 2 + j] > 0.0f ? xv[i * 3 + k] : 0.0;
        worst = std::max(worst, std::abs(expect - gv[k * 2 + j]));
      }
    }
    if (!(worst <= 1e-5)) {
      std::cerr << "ember-smoke: FAILED: gradient differs from the hand-computed one by " << worst << "\n";
      return 1;
    }
    std::cout << "ember-smoke: ok (gradient matches the hand-computed one, max difference " << worst << ")\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "ember-smoke: FAILED: " << e.what() << "\n";
    return 1;
  }
}
