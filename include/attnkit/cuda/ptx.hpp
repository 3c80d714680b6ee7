#pragma once
// The few PTX instructions the tiled kernels are built from (sm_80+): asynchronous 16-byte
// global->shared copies, ldmatrix fragment loads and the m16n8k16 tensor-core MMA with fp32
// accumulation. Fragment layouts follow the PTX ISA ("Matrix fragments for mma.m16n8k16").
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "../core/dtype.hpp"

namespace attnkit::cuda::ptx {

__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared; src_bytes < 16 zero-fills the rest (0: a pure zero fill).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(src_bytes));
}
// Brings the line of a global address into L1 (no register waits for it).
__device__ __forceinline__ void prefetch_l1(const void* gmem) { asm volatile("prefetch.global.L1 [%0];\n" ::"l"(gmem)); }
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
}

// Four 8x8 b16 matrices; lane l supplies the row address for matrix l / 8.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}

// D = A (16x16, row) * B (16x8, col) + D, fp32 accumulators.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                          std::uint32_t b1) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// 2^x on the special-function unit, subnormal results flushed to zero (2^-inf = 0). exp2f
// wraps the same instruction in a subnormal fix-up of three more instructions per call, which
// the softmax weights (relative to the row max, or zero) never need.
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// x^r for x >= 0 (also +inf and NaN) as 2^(r log2 x), two special-function operations and a
// multiply: the kernel's inline copy of powf, once per weight, was three quarters of the
// softplus kernel's code. 0 gives 0 (r > 0); subnormal inputs and results are kept. The
// relative error grows with |r log2 x|: below 4e-5 for results down to 2^-200 at r <= 2.
__device__ __forceinline__ float pow_nonneg(float x, float r) {
  float lg, y;
  asm("lg2.approx.f32 %0, %1;\n" : "=f"(lg) : "f"(x));
  asm("ex2.approx.f32 %0, %1;\n" : "=f"(y) : "f"(r * lg));
  return y;
}

// max that returns NaN if either operand is NaN (fmaxf drops it): one instruction, so a row
// maximum also tells whether any of its logits was NaN.
__device__ __forceinline__ float fmax_nan(float a, float b) {
  float y;
  asm("max.NaN.f32 %0, %1, %2;\n" : "=f"(y) : "f"(a), "f"(b));
  return y;
}

// min(1 / y, 1) for y >= 1 on the FMA pipe, leaving the special-function unit to the
// exponentials (rcp.approx there instead measured 10-13% slower for sigmoid on the H100): an
// integer-subtraction seed r with relative error e = 1 - y r within 5.1% over y >= 1, then
// r (1 + e + e^2) = (1 - e^3) / y (relative error < 1.3e-4, under bf16's 4e-3) in three
// dependent operations, the last one saturating: it clamps to [0, 1] and turns y = +inf
// (an -inf x inf product) and NaN into 0.
__device__ __forceinline__ float rcp_sat(float y) {
  const float r = __int_as_float(0x7EF311C3 - __float_as_int(y));
  const float e = fmaf(-y, r, 1.f);
  float q;
  asm("fma.rn.sat.f32 %0, %1, %2, %1;\n" : "=f"(q) : "f"(r), "f"(fmaf(e, e, e)));
  return q;
}

// Two floats -> one register of two 16-bit values (low half = first), round to nearest.
template <class T>
__device__ __forceinline__ std::uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  }
}
template <class T>
__device__ __forceinline__ float2 unpack2(std::uint32_t r) {
  if constexpr (std::is_same_v<T, bfloat16>) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&r));
  } else {
    return __half22float2(*reinterpret_cast<const __half2*>(&r));
  }
}

template <class T>
__device__ __forceinline__ float to_f32(T x) {
  if constexpr (std::is_same_v<T, float>) return x;
  else if constexpr (std::is_same_v<T, bfloat16>) return __uint_as_float(std::uint32_t(x.bits) << 16);
  else return __half2float(*reinterpret_cast<const __half*>(&x));
}
template <class T>
__device__ __forceinline__ T from_f32(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    const __nv_bfloat16 v = __float2bfloat16_rn(x);
    T out;
    out.bits = *reinterpret_cast<const std::uint16_t*>(&v);
    return out;
  } else {
    const __half v = __float2half_rn(x);
    T out;
    out.bits = *reinterpret_cast<const std::uint16_t*>(&v);
    return out;
  }
}

}  // namespace attnkit::cuda::ptx
