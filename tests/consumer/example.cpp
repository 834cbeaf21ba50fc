// The README's example, word for word below this line (run.cmake checks that the two agree).
#include <ember/ember.h>

#include <iostream>

int main() {
  ember::Device device = ember::cuda::is_available() ? ember::Device::cuda(0) : ember::Device::cpu();
  ember::manual_seed(7);
  ember::Tensor x = ember::randn({8, 4}, device);
  ember::Tensor w = ember::randn({4, 3}, ember::TensorOptions(ember::DType::F32, device, /*requires_grad=*/true));
  ember::Tensor loss = ember::sum(ember::relu(ember::matmul(x, w)));
  loss.backward();
  std::cout << "loss " << loss.item() << "\n" << w.grad() << "\n";
}
