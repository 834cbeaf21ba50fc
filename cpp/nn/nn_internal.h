// What the nn sources share with each other but not with users.
#pragma once

namespace ember::nn {

// True while Module::summary() runs a forward pass on this thread (Sequential then calls each
// child, unfused, so every layer gets its row).
bool summary_running();

}  // namespace ember::nn
