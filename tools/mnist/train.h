// ember-mnist's training run: returns the process exit code.
#pragma once
#include "config.h"

namespace mnist {

// Trains (or, with --eval, evaluates) as `cfg` says. Throws ember::Error for bad input.
int run(const Config& cfg);

// Set by the SIGINT handler: the run finishes the current step, saves and stops.
void request_stop();

}  // namespace mnist
