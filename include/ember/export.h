// EMBER_API marks the public surface of libember.so (built with hidden visibility).
#pragma once
#if defined(_WIN32)
#define EMBER_API
#else
#define EMBER_API __attribute__((visibility("default")))
#endif
