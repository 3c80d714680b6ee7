#pragma once
// Hopper's tensor memory accelerator (TMA, sm_90): one thread asks for a whole [rows x 64]
// tile block, the copy engine writes it into shared memory already in wgmma's 128-byte swizzle
// and counts the bytes on an mbarrier that the readers wait on. It replaces the 16 cp.async
// per thread per key tile (and their address arithmetic, about one instruction per weight of
// the tile) with one instruction per CTA.
//
// Host: `key_tile_map` encodes a tensor map for the K or V tiles of a dense [B, H, N, D]
// tensor (any strides that are multiples of 16 bytes), `page_tile_map` one for a paged pool,
// or they report that the tensor does not qualify; the driver's encoder is looked up at run
// time, so nothing links against libcuda.
#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "../core/paged.hpp"
#include "../core/tensor.hpp"
#include "error.hpp"

namespace attnkit::cuda {

// The K and V tile maps of one launch; `on` is false where the tensors do not qualify (the
// kernel then copies with cp.async).
struct KeyTileMaps {
  CUtensorMap k, v;
  bool on = false;
};

namespace tma {

// ------------------------------------------------------------------ device side (sm_90)

__device__ __forceinline__ void init(std::uint64_t* bar, unsigned arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(static_cast<std::uint32_t>(__cvta_generic_to_shared(bar))),
               "r"(arrivals)
               : "memory");
}
// Makes initialised mbarriers visible to the copy engine (before the CTA barrier that
// publishes them to the other threads).
__device__ __forceinline__ void fence_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }

// The producer's arrival, announcing `bytes` the copies will deliver to this phase.
__device__ __forceinline__ void arrive_expect(std::uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(
                   static_cast<std::uint32_t>(__cvta_generic_to_shared(bar))),
               "r"(bytes)
               : "memory");
}

// An arrival without bytes (a tile that came by cp.async instead).
__device__ __forceinline__ void arrive(std::uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(static_cast<std::uint32_t>(__cvta_generic_to_shared(bar)))
               : "memory");
}

// Waits until the phase of the given parity has completed (its bytes are in shared memory and
// visible to this thread and to its wgmma).
__device__ __forceinline__ void wait(std::uint64_t* bar, unsigned parity) {
  const auto addr = static_cast<std::uint32_t>(__cvta_generic_to_shared(bar));
  std::uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
  } while (!done);
}

// The box at coordinates (0, x1, x2, x3, x4) of a 5-d map into `smem`, counted on bar: (0, row,
// 0, head, batch) of a key tile map, (0, slot, block, head, page) of a page map.
__device__ __forceinline__ void load_box(void* smem, const CUtensorMap* map, std::uint64_t* bar, int x1, int x2, int x3,
                                         int x4) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5, "
      "%6}], [%7];\n" ::"r"(static_cast<std::uint32_t>(__cvta_generic_to_shared(smem))),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(0), "r"(x1), "r"(x2), "r"(x3), "r"(x4),
      "r"(static_cast<std::uint32_t>(__cvta_generic_to_shared(bar)))
      : "memory");
}

// ------------------------------------------------------------------ host side

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// The driver's cuTensorMapEncodeTiled, or nullptr where the driver has none.
inline EncodeTiled encoder() {
  static EncodeTiled fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &p, cudaEnableDefault, &found);
#endif
    if (e != cudaSuccess || found != cudaDriverEntryPointSuccess) p = nullptr;
    (void)cudaGetLastError();
    return reinterpret_cast<EncodeTiled>(p);
  }();
  return fn;
}

// Strides (elements) of 16-bit values that a tensor map takes: positive multiples of 16 bytes
// below 2^40 bytes.
inline bool map_strides_ok(const index_t* stride, int n) {
  for (int d = 0; d < n; ++d)
    if ((stride[d] * 2) % 16 != 0 || stride[d] <= 0 || stride[d] * 2 >= (std::int64_t(1) << 40)) return false;
  return true;
}

// A 5-d map of 16-bit values in the 128-byte swizzle (the wgmma operand layout).
template <class T>
bool encode_swizzled(CUtensorMap& map, const T* data, const cuuint64_t (&dims)[5], const cuuint64_t (&strides)[4],
                     const cuuint32_t (&box)[5]) {
  const EncodeTiled encode = encoder();
  if (!encode || reinterpret_cast<std::uintptr_t>(data) % 16 != 0) return false;
  const cuuint32_t unit[5] = {1, 1, 1, 1, 1};
  const CUtensorMapDataType type = std::is_same_v<std::remove_const_t<T>, bfloat16> ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                                                    : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  return encode(&map, type, 5, const_cast<void*>(static_cast<const void*>(data)), dims, strides, box, unit,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Tiles of `rows` keys x HD columns of a [B, H, N, HD] tensor of 16-bit values, as the 5-d
// view (64 columns, N rows, HD / 64 column blocks, H, B): one box is a whole tile in the
// 128-byte swizzle's layout, column block after column block (gmma::swizzled). Rows past N
// arrive as zeros. False where the tensor does not qualify: head dim other than HD, a base or
// a stride that is not a multiple of 16 bytes.
template <class T>
bool key_tile_map(CUtensorMap& map, const TensorView<T>& t, int HD, int rows) {
  static_assert(sizeof(T) == 2, "TMA key tiles: 16-bit values");
  if (t.shape[3] != HD || HD % 64 != 0 || !map_strides_ok(t.stride.data(), 3)) return false;
  if (t.shape[0] > 0x7fffffff || t.shape[1] > 0x7fffffff || t.shape[2] > 0x7fffffff) return false;
  const cuuint64_t dims[5] = {64, cuuint64_t(t.shape[2]), cuuint64_t(HD / 64), cuuint64_t(t.shape[1]), cuuint64_t(t.shape[0])};
  const cuuint64_t strides[4] = {cuuint64_t(t.stride[2]) * 2, 128, cuuint64_t(t.stride[1]) * 2, cuuint64_t(t.stride[0]) * 2};
  const cuuint32_t box[5] = {64, cuuint32_t(rows), cuuint32_t(HD / 64), 1, 1};
  return encode_swizzled(map, t.data, dims, strides, box);
}

// Key tiles of a paged pool (page, slot, head, HD columns; 16-bit values), as the 5-d view
// (64 columns, page_size slots, HD / 64 column blocks, heads, pages) with boxes of
// min(page_size, rows) slots x 64 columns: a [rows x HD] tile is rows / box slots x HD / 64
// boxes, each in the 128-byte swizzle's layout at its place in the tile. False where the pool
// does not qualify: pages of fewer than 8 slots or that neither divide nor are multiples of the
// tile (a box must start on the swizzle's 8-row period), a base or a stride that is not a
// multiple of 16 bytes.
template <class T>
bool page_tile_map(CUtensorMap& map, const PagePool<T>& pool, index_t pages, index_t page_size, index_t heads,
                   index_t dim, int HD, int rows) {
  static_assert(sizeof(T) == 2, "TMA key tiles: 16-bit values");
  if (dim != HD || HD % 64 != 0 || pages <= 0 || heads <= 0 || !map_strides_ok(pool.stride.data(), 3)) return false;
  if (page_size % 8 != 0 || !(rows % page_size == 0 || page_size % rows == 0)) return false;
  if (pages > 0x7fffffff || page_size > 0x7fffffff || heads > 0x7fffffff) return false;
  const cuuint64_t dims[5] = {64, cuuint64_t(page_size), cuuint64_t(HD / 64), cuuint64_t(heads), cuuint64_t(pages)};
  const cuuint64_t strides[4] = {cuuint64_t(pool.stride[1]) * 2, 128, cuuint64_t(pool.stride[2]) * 2,
                                 cuuint64_t(pool.stride[0]) * 2};
  const cuuint32_t box[5] = {64, cuuint32_t(page_size < rows ? page_size : rows), 1, 1, 1};
  return encode_swizzled(map, pool.data, dims, strides, box);
}

}  // namespace tma
}  // namespace attnkit::cuda
