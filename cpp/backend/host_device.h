// EMBER_HOST_DEVICE: marks arithmetic compiled both for the CPU loops and the CUDA kernels.
#pragma once
#if defined(__CUDACC__)
#define EMBER_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define EMBER_HOST_DEVICE inline
#endif
