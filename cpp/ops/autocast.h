// The op layer's side of autocast (include/ember/amp.h): each op listed in autocast.cpp's table
// passes its floating inputs through autocast_input first.
#pragma once
#include "ember/amp.h"
#include "ember/tensor.h"

namespace ember::ops {

// `t` as op's autocast policy wants it inside an autocast scope (a differentiable cast), else `t`.
Tensor autocast_input(const Tensor& t, const char* op);

}  // namespace ember::ops
