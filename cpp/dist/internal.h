// ember::dist internals shared by its source files.
#pragma once
#include "ember/dist.h"

namespace ember::dist::detail {
// The timeout init() gives the group: options, else EMBER_DIST_TIMEOUT, else kDefaultTimeoutSeconds.
double default_timeout(const InitOptions& o);
}  // namespace ember::dist::detail
