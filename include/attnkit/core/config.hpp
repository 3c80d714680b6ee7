#pragma once
// Build-environment switches shared by every header.

#if defined(__CUDACC__)
#define ATTNKIT_HD __host__ __device__
#define ATTNKIT_DEVICE_CODE 1
#else
#define ATTNKIT_HD
#endif

#if defined(__CUDA_ARCH__)
#define ATTNKIT_ON_DEVICE 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ATTNKIT_INLINE inline __attribute__((always_inline))
#define ATTNKIT_INLINE_LAMBDA __attribute__((always_inline))  // after a lambda's parameter list
#else
#define ATTNKIT_INLINE inline
#define ATTNKIT_INLINE_LAMBDA
#endif
