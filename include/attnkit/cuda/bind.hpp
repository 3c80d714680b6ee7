#pragma once
// Binding content-dependent masks on the GPU: a pre-pass of small kernels (O(N * D) pooling
// and routing work, stream-ordered before the attention launch) writes per-head selections
// into a workspace; inside the attention kernel each CTA binds its head to a plain mask
// (ClusterIds, MoBARows, BlockMask & base) that classifies tiles like any static mask.
//   ClusterRouting: nearest centroid per query and key token
//   MoBA:           key-block means, then per query its own block + the top_k - 1 best
//   TopKBlocks:     query- and key-block means, then per query block the k best key blocks
// Exact per-key TopK needs per-row thresholds over the kernel's own logits and is not
// supported by this backend (supports_mask<TopK<...>> is false; run() says so at compile time).
#include <cuda_runtime_api.h>

#include <climits>
#include <cstdint>
#include <mutex>

#include "../core/problem.hpp"
#include "../mask/block.hpp"
#include "../mask/combinators.hpp"
#include "../mask/routing.hpp"
#include "../mask/topk.hpp"
#include "error.hpp"
#include "ptx.hpp"
#include "sequences.cuh"

namespace attnkit::cuda {

// Whether the CUDA backend runs a mask (content-dependent ones through a pre-pass).
template <class M>
inline constexpr bool supports_mask = !is_topk_mask_v<M>;
template <class A, class B>
inline constexpr bool supports_mask<And<A, B>> = supports_mask<A> && supports_mask<B>;
template <class A, class B>
inline constexpr bool supports_mask<Or<A, B>> = supports_mask<A> && supports_mask<B>;
template <class B>
inline constexpr bool supports_mask<TopKBlocks<B>> = !is_content_dependent<B>();

namespace detail {

// Q and K of the whole problem as the pre-pass kernels read them.
template <class T>
struct PrepassInputs {
  const T* q;
  const T* k;
  std::int64_t qs[3], ks[3];
  ProblemInfo p;
};

// Whether every q row is 16-byte aligned (the routing kernels then load them as vectors).
template <class T>
bool moba_rows_aligned(const PrepassInputs<T>& in) {
  return rows_of_16_byte_pieces(in.q, in.qs, in.p.D);
}

// attnkit's own stream-ordered memory pool of the current device. It keeps up to 256 MB
// cached between calls: the default pool returns memory to the driver at every
// synchronisation, and re-mapping it costs tens of microseconds per call, which a decode
// step of a millisecond notices. A pool of our own leaves the caller's default pool alone.
inline cudaMemPool_t scratch_pool() {
  constexpr int max_devices = 64;
  static cudaMemPool_t pools[max_devices] = {};
  static std::mutex mutex;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  require(dev < max_devices, "device", "attnkit supports device ordinals below 64");
  std::lock_guard<std::mutex> lock(mutex);
  if (!pools[dev]) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = dev;
    check(cudaMemPoolCreate(&pools[dev], &props), "cudaMemPoolCreate");
    std::uint64_t keep = std::uint64_t(256) << 20;
    check(cudaMemPoolSetAttribute(pools[dev], cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");
  }
  return pools[dev];
}

// Stream-ordered scratch memory, released after the attention launch.
class Workspace {
 public:
  explicit Workspace(cudaStream_t s) : stream_(s) {}
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() {
    for (int i = 0; i < n_; ++i) (void)cudaFreeAsync(ptrs_[i], stream_);
  }
  template <class U>
  U* alloc(std::size_t count) {
    require(n_ < max_buffers, "mask", "too many workspace buffers for one mask");
    void* p = nullptr;
    check(cudaMallocFromPoolAsync(&p, (count ? count : 1) * sizeof(U), scratch_pool(), stream_),
          "cudaMallocFromPoolAsync(workspace)");
    ptrs_[n_++] = p;
    return static_cast<U*>(p);
  }

 private:
  static constexpr int max_buffers = 16;
  cudaStream_t stream_;
  void* ptrs_[max_buffers] = {};
  int n_ = 0;
};

inline unsigned blocks_for(std::int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

// Static masks bind to themselves.
template <class M>
struct DeviceBinder {
  struct Data {};
  template <class T>
  static Data prepare(const M&, const PrepassInputs<T>&, Workspace&, cudaStream_t) {
    return {};
  }
  __device__ static M bind(const M& m, const Data&, const ProblemInfo&, int, int, int) { return m; }
};

template <class A, class B, template <class, class> class Comb>
struct CombDeviceBinder {
  struct Data {
    typename DeviceBinder<A>::Data a;
    typename DeviceBinder<B>::Data b;
  };
  template <class T>
  static Data prepare(const Comb<A, B>& m, const PrepassInputs<T>& in, Workspace& ws, cudaStream_t s) {
    return {DeviceBinder<A>::prepare(m.a, in, ws, s), DeviceBinder<B>::prepare(m.b, in, ws, s)};
  }
  __device__ static auto bind(const Comb<A, B>& m, const Data& d, const ProblemInfo& p, int b, int h, int hk) {
    auto x = DeviceBinder<A>::bind(m.a, d.a, p, b, h, hk);
    auto y = DeviceBinder<B>::bind(m.b, d.b, p, b, h, hk);
    return Comb<decltype(x), decltype(y)>{x, y};
  }
};
template <class A, class B>
struct DeviceBinder<And<A, B>> : CombDeviceBinder<A, B, And> {};
template <class A, class B>
struct DeviceBinder<Or<A, B>> : CombDeviceBinder<A, B, Or> {};

// ------------------------------------------------------------------ pre-pass kernels

// Rows of at most row_dim values that the pre-pass kernels keep in registers, a thread per row.
inline constexpr int row_dim = 128;

// A row of D <= row_dim 16-bit values as floats, zeros past D: sixteen 16-byte loads when the
// row is 16-byte aligned (`vec`), else one load per value. (A thread per row loading a value
// at a time issues 128 loads that each touch 32 rows' cache lines: 220 us for the nearest-
// centroid pass over 16384 x 16 rows on the H200, 85 with vectors.)
template <class T>
__device__ __forceinline__ void load_row_f32(const T* row, int D, bool vec, float (&x)[row_dim]) {
  if (vec) {
#pragma unroll
    for (int d = 0; d < row_dim; d += 8) {
      uint4 w = make_uint4(0, 0, 0, 0);
      if (d < D) w = *reinterpret_cast<const uint4*>(row + d);
      const T* e = reinterpret_cast<const T*>(&w);
#pragma unroll
      for (int u = 0; u < 8; ++u) x[d + u] = ptx::to_f32(e[u]);
    }
  } else {
#pragma unroll
    for (int d = 0; d < row_dim; ++d) x[d] = d < D ? ptx::to_f32(row[d]) : 0.f;
  }
}

// Nearest centroid (Euclidean, ties to the lower index) of every row of a [B, H, N, D] view: a
// thread per row, its row in registers (zero-padded to 128), the centroids (at most 64 x 128)
// in shared memory, read by every thread at the same address. (A thread per row reading both
// from global memory left the row's loads uncoalesced and every centroid load waiting.)
template <class T>
__global__ void __launch_bounds__(128) nearest_centroid_kernel(const T* x, std::int64_t s0, std::int64_t s1,
                                                               std::int64_t s2, int B, int H, int N, int D, bool vec,
                                                               const float* centroids, int n_clusters, std::uint8_t* out) {
  constexpr int max_clusters = 64, dim = row_dim;
  __shared__ __align__(16) float cs[max_clusters][dim];
  for (int e = int(threadIdx.x); e < n_clusters * dim; e += int(blockDim.x))
    cs[e / dim][e % dim] = e % dim < D ? centroids[(e / dim) * D + e % dim] : 0.f;
  __syncthreads();
  const std::int64_t row = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= std::int64_t(B) * H * N) return;
  const int i = int(row % N), h = int((row / N) % H), b = int(row / (std::int64_t(N) * H));
  float xv[dim];
  load_row_f32(x + b * s0 + h * s1 + i * s2, D, vec, xv);
  float best = 0.f;
  int id = 0;
  for (int c = 0; c < n_clusters; ++c) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int d = 0; d < dim; d += 4) {
      const float4 c4 = *reinterpret_cast<const float4*>(&cs[c][d]);
      const float t0 = xv[d] - c4.x, t1 = xv[d + 1] - c4.y, t2 = xv[d + 2] - c4.z, t3 = xv[d + 3] - c4.w;
      acc[0] = fmaf(t0, t0, acc[0]), acc[1] = fmaf(t1, t1, acc[1]);
      acc[2] = fmaf(t2, t2, acc[2]), acc[3] = fmaf(t3, t3, acc[3]);
    }
    const float d2 = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    if (c == 0 || d2 < best) best = d2, id = c;
  }
  out[row] = std::uint8_t(id);
}

// Means over blocks of `block` rows: out[(b * H + h) * nblocks + blk][D]. A CTA per block:
// its warps take every means_warps-th row, each lane 4 columns (a warp reads whole rows), and
// the warps' sums meet in shared memory. (One thread per column walking all rows left each
// row's loads waiting on the last: 62 us for K's means at N = 16384 x 16 heads.)
inline constexpr int means_warps = 8;
template <class T>
__global__ void __launch_bounds__(means_warps * 32) block_means_kernel(const T* x, std::int64_t s0, std::int64_t s1,
                                                                       std::int64_t s2, int H, int N, int D, int row0,
                                                                       int n_rows, int block, int nblocks, float* out) {
  __shared__ float part[means_warps][128];
  const int blk = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int lo = max(0, blk * block - row0), hi = min(n_rows, (blk + 1) * block - row0);
  float sum[4] = {0.f, 0.f, 0.f, 0.f};
  const T* base = x + b * s0 + h * s1;
  for (int i = lo + warp; i < hi; i += means_warps) {
    const T* row = base + std::int64_t(i) * s2;
#pragma unroll
    for (int u = 0; u < 4; ++u)
      if (lane * 4 + u < D) sum[u] += ptx::to_f32(row[lane * 4 + u]);
  }
#pragma unroll
  for (int u = 0; u < 4; ++u) part[warp][lane * 4 + u] = sum[u];
  __syncthreads();
  for (int d = int(threadIdx.x); d < D; d += means_warps * 32) {
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < means_warps; ++w) total += part[w][d];
    out[(std::int64_t(bh) * nblocks + blk) * D + d] = hi > lo ? total / float(hi - lo) : 0.f;
  }
}

// Keeps the `keep` largest (score, -index) in a small sorted list (descending).
struct TopList {
  static constexpr int capacity = 64;
  float score[capacity];
  int index[capacity];
  int n = 0;
  __device__ void offer(float s, int i, int keep) {
    if (keep <= 0) return;
    if (n == keep && !(s > score[n - 1])) return;  // ties keep the earlier (lower) index
    int at = n < keep ? n++ : keep - 1;
    while (at > 0 && s > score[at - 1]) {
      score[at] = score[at - 1], index[at] = index[at - 1];
      --at;
    }
    score[at] = s, index[at] = i;
  }
};

// Pooled routing on CUDA cores: each thread scores one row (a query; TopKBlocks' query-block
// means take route_warp_kernel below) against the key-block means of its head, which the CTA
// stages through shared memory route_chunk blocks at a time, and keeps the best in a TopList.
// The row lives in registers (zero-padded to route_dim), and every thread reads the same mean
// at the same time (a broadcast). (A thread per row reading both from global memory, the row uncoalesced, took
// 4.1 ms for MoBA's routing at N = 16384 x 16 heads on the H100 and 1.1 ms for TopKBlocks':
// longer than the attention after it.)
inline constexpr int route_threads = 128, route_chunk = 32, route_dim = row_dim;

// A Policy gives the rows and what may be chosen:
//   rows()                        rows per (batch, head)
//   load(b, h, r, x)              the row as floats into x[route_dim], zeros past D
//                                 (route_warp_kernel: element(b, h, r, d), d < D)
//   limit(b, h, r)                blocks [0, limit) are candidates ...
//   allowed(b, h, r, kb)          ... where this holds
//   keep()                        how many to keep
//   write(b, h, r, top)           the selection
template <class Policy>
__global__ void __launch_bounds__(route_threads) route_kernel(const __grid_constant__ Policy pol, const float* kmeans,
                                                              int D, int nkb, int Hq, int Hkv) {
  __shared__ __align__(16) float means[route_chunk][route_dim];
  const int bh = int(blockIdx.y), b = bh / Hq, h = bh % Hq, hk = h / (Hq / Hkv);
  const int r = int(blockIdx.x) * route_threads + int(threadIdx.x);
  const bool live = r < pol.rows();
  float x[route_dim];
  pol.load(b, h, live ? r : 0, x);
  const int limit = live ? pol.limit(b, h, r) : 0;
  const float* kbase = kmeans + (std::int64_t(b) * Hkv + hk) * nkb * D;
  TopList top;
  for (int c0 = 0; __syncthreads_or(c0 < limit); c0 += route_chunk) {  // (the barrier frees `means`)
    for (int e = int(threadIdx.x); e < route_chunk * route_dim; e += route_threads) {
      const int kb = c0 + e / route_dim, d = e % route_dim;
      means[e / route_dim][d] = kb < nkb && d < D ? kbase[std::int64_t(kb) * D + d] : 0.f;
    }
    __syncthreads();
    const int n = min(route_chunk, limit - c0);
    for (int c = 0; c < n; ++c) {
      if (!pol.allowed(b, h, r, c0 + c)) continue;
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int d = 0; d < route_dim; d += 4) {
        const float4 m4 = *reinterpret_cast<const float4*>(&means[c][d]);
        acc[0] = fmaf(x[d], m4.x, acc[0]);
        acc[1] = fmaf(x[d + 1], m4.y, acc[1]);
        acc[2] = fmaf(x[d + 2], m4.z, acc[2]);
        acc[3] = fmaf(x[d + 3], m4.w, acc[3]);
      }
      top.offer((acc[0] + acc[1]) + (acc[2] + acc[3]), c0 + c, pol.keep());
    }
  }
  if (live) pol.write(b, h, r, top);
}

// The same selection for few rows with many candidates each (TopKBlocks: a row per query
// block, so N = 16384 with blocks of 128 gives 2048 rows, 16 CTAs of route_kernel: 184 us on
// the H200 for 128 candidates a row). A warp per row: the row in shared memory (policy:
// element(b, h, r, d)), each lane scoring every 32nd candidate against its key-block mean into
// its own TopList, then the lanes' lists merged best first, (score, lower index) as the order
// TopList keeps, so the selection is route_kernel's.
inline constexpr int route_warps = 4;
template <class Policy>
__global__ void __launch_bounds__(route_warps * 32) route_warp_kernel(const __grid_constant__ Policy pol,
                                                                      const float* kmeans, int D, int nkb, int Hq,
                                                                      int Hkv) {
  __shared__ __align__(16) float rows[route_warps][route_dim];
  const int bh = int(blockIdx.y), b = bh / Hq, h = bh % Hq, hk = h / (Hq / Hkv);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int r = int(blockIdx.x) * route_warps + warp;
  if (r >= pol.rows()) return;  // whole warps: only warp-level synchronisation below
  float* x = rows[warp];
  for (int d = lane; d < route_dim; d += 32) x[d] = d < D ? pol.element(b, h, r, d) : 0.f;
  __syncwarp();
  const int limit = pol.limit(b, h, r), keep = pol.keep();
  const float* kbase = kmeans + (std::int64_t(b) * Hkv + hk) * nkb * D;
  TopList top;
  for (int kb = lane; kb < limit; kb += 32) {
    if (!pol.allowed(b, h, r, kb)) continue;
    const float* mean = kbase + std::int64_t(kb) * D;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};  // route_kernel's summation order
    for (int d = 0; d < D; d += 4) {
      float4 m4;  // the means are packed rows of D floats: 16-byte aligned when D % 4 == 0
      if (D % 4 == 0) m4 = *reinterpret_cast<const float4*>(mean + d);
      else m4 = make_float4(mean[d], d + 1 < D ? mean[d + 1] : 0.f, d + 2 < D ? mean[d + 2] : 0.f, d + 3 < D ? mean[d + 3] : 0.f);
      acc[0] = fmaf(x[d], m4.x, acc[0]);
      acc[1] = fmaf(x[d + 1], m4.y, acc[1]);
      acc[2] = fmaf(x[d + 2], m4.z, acc[2]);
      acc[3] = fmaf(x[d + 3], m4.w, acc[3]);
    }
    top.offer((acc[0] + acc[1]) + (acc[2] + acc[3]), kb, keep);
  }
  // Merge: each round the best head of the 32 lists (ties to the lower index) moves to `best`.
  TopList best;
  int at = 0;
  for (int t = 0; t < keep; ++t) {
    float sc = at < top.n ? top.score[at] : neg_inf;
    int ix = at < top.n ? top.index[at] : INT_MAX;
#pragma unroll
    for (int off = 16; off > 0; off /= 2) {
      const float s2 = __shfl_xor_sync(0xffffffffu, sc, off);
      const int i2 = __shfl_xor_sync(0xffffffffu, ix, off);
      if (s2 > sc || (!(s2 < sc) && i2 < ix)) sc = s2, ix = i2;
    }
    if (ix == INT_MAX) break;  // every list is spent (the same on all lanes)
    if (at < top.n && top.index[at] == ix) ++at;
    best.score[t] = sc, best.index[t] = ix, best.n = t + 1;
  }
  if (lane == 0) pol.write(b, h, r, best);
}

// MoBA: per query row its own block and the top_k - 1 best earlier blocks, as bits.
template <class T>
struct MoBARoute {
  PrepassInputs<T> in;
  int block, nkb, words, top_k;
  bool vec;  // 16-byte aligned q rows
  std::uint64_t* bits;

  static constexpr bool warp_per_row = false;
  __device__ int rows() const { return int(in.p.Nq); }
  __device__ void load(int b, int h, int i, float (&x)[route_dim]) const {
    load_row_f32(in.q + b * in.qs[0] + h * in.qs[1] + i * in.qs[2], int(in.p.D), vec, x);
  }
  __device__ std::int64_t own(int i) const { return in.p.pos(i) / block; }
  __device__ int limit(int, int, int i) const { return int(own(i) < nkb ? own(i) : nkb); }
  __device__ bool allowed(int, int, int, int) const { return true; }
  __device__ int keep() const { return top_k - 1; }
  __device__ void write(int b, int h, int i, const TopList& top) const {
    std::uint64_t* out = bits + ((std::int64_t(b) * in.p.Hq + h) * in.p.Nq + i) * words;
    for (int w = 0; w < words; ++w) out[w] = 0;
    if (own(i) < nkb) out[own(i) / 64] |= std::uint64_t(1) << (own(i) % 64);
    for (int e = 0; e < top.n; ++e) out[top.index[e] / 64] |= std::uint64_t(1) << (top.index[e] % 64);
  }
};

// TopKBlocks: per (batch, head, query block) the k key blocks with the best pooled score among
// those the base mask allows for the block's queries, as a byte map.
template <class Base>
struct TopKBlocksRoute {
  ProblemInfo p;
  Base base;
  const float* qmeans;  // [B, Hq, nqb, D]
  int bq, bk, nqb, nkb, k;
  unsigned char* bitmap;

  static constexpr bool warp_per_row = true;
  __device__ int rows() const { return nqb; }
  __device__ float element(int b, int h, int qb, int d) const {
    return qmeans[((std::int64_t(b) * p.Hq + h) * nqb + qb) * p.D + d];
  }
  // The query block's rows [i_lo, i_hi) (query blocks are in positions).
  __device__ std::int64_t i_lo(int qb) const { return max(std::int64_t(qb) * bq - p.q_offset, std::int64_t(0)); }
  __device__ std::int64_t i_hi(int qb) const { return min(std::int64_t(qb + 1) * bq - p.q_offset, p.Nq); }
  __device__ int limit(int, int, int qb) const {
    if (i_lo(qb) >= i_hi(qb)) return 0;
    const KeyBounds kbd = mask_key_bounds(base, p.pos(i_lo(qb)), p.pos(i_hi(qb)), p.Nk);
    return kbd.lo < kbd.hi ? int((kbd.hi + bk - 1) / bk) : 0;
  }
  __device__ bool allowed(int, int, int qb, int kb) const {
    const std::int64_t k_hi = min(std::int64_t(kb + 1) * bk, p.Nk);
    const TileRect rect{p.pos(i_lo(qb)), p.pos(i_hi(qb)), std::int64_t(kb) * bk, k_hi};
    const TileKind kind = mask_classify(base, rect);
    if (kind == TileKind::full) return true;
    if (kind == TileKind::skip) return false;
    for (std::int64_t pos = rect.q_lo; pos < rect.q_hi; ++pos)  // classification may be conservative
      for (std::int64_t j = rect.k_lo; j < rect.k_hi; ++j)
        if (base.allowed(pos, j)) return true;
    return false;
  }
  __device__ int keep() const { return k; }
  __device__ void write(int b, int h, int qb, const TopList& top) const {
    unsigned char* out = bitmap + ((std::int64_t(b) * p.Hq + h) * nqb + qb) * nkb;
    for (int kb = 0; kb < nkb; ++kb) out[kb] = 0;
    for (int e = 0; e < top.n; ++e) out[top.index[e]] = 1;
  }
};

// Policies with Policy::warp_per_row (few rows, many candidates) take route_warp_kernel.
template <class Policy>
void launch_route(const Policy& pol, int rows, const float* kmeans, const ProblemInfo& p, int nkb, cudaStream_t s,
                  const char* what) {
  require(p.D <= route_dim, "q.shape", "content-dependent masks on the GPU support head dims up to 128");
  require(p.B * p.Hq <= 65535, "q.shape", "batch x heads must be at most 65535 for GPU routing");
  if (rows == 0) return;
  if constexpr (Policy::warp_per_row)
    route_warp_kernel<Policy><<<dim3(blocks_for(rows, route_warps), unsigned(p.B * p.Hq)), route_warps * 32, 0, s>>>(
        pol, kmeans, int(p.D), nkb, int(p.Hq), int(p.Hkv));
  else
    route_kernel<Policy><<<dim3(blocks_for(rows, route_threads), unsigned(p.B * p.Hq)), route_threads, 0, s>>>(
        pol, kmeans, int(p.D), nkb, int(p.Hq), int(p.Hkv));
  check(cudaGetLastError(), what);
}

// ------------------------------------------------------------------ binders

template <>
struct DeviceBinder<ClusterRouting> {
  struct Data {
    const std::uint8_t* qc;
    const std::uint8_t* kc;
  };
  template <class T>
  static Data prepare(const ClusterRouting& m, const PrepassInputs<T>& in, Workspace& ws, cudaStream_t s) {
    const ProblemInfo& p = in.p;
    require_device_memory(m.centroids, "mask.centroids");
    std::uint8_t* qc = ws.alloc<std::uint8_t>(std::size_t(p.B * p.Hq * p.Nq));
    std::uint8_t* kc = ws.alloc<std::uint8_t>(std::size_t(p.B * p.Hkv * p.Nk));
    const int nt = 128;
    nearest_centroid_kernel<<<blocks_for(p.B * p.Hq * p.Nq, nt), nt, 0, s>>>(
        in.q, in.qs[0], in.qs[1], in.qs[2], int(p.B), int(p.Hq), int(p.Nq), int(p.D), rows_of_16_byte_pieces(in.q, in.qs, p.D),
        m.centroids, int(m.n_clusters), qc);
    check(cudaGetLastError(), "nearest_centroid_kernel (queries)");
    if (p.Nk > 0) {
      nearest_centroid_kernel<<<blocks_for(p.B * p.Hkv * p.Nk, nt), nt, 0, s>>>(
          in.k, in.ks[0], in.ks[1], in.ks[2], int(p.B), int(p.Hkv), int(p.Nk), int(p.D), rows_of_16_byte_pieces(in.k, in.ks, p.D),
          m.centroids, int(m.n_clusters), kc);
      check(cudaGetLastError(), "nearest_centroid_kernel (keys)");
    }
    return {qc, kc};
  }
  __device__ static ClusterIds bind(const ClusterRouting&, const Data& d, const ProblemInfo& p, int b, int h, int hk) {
    return {d.qc + (std::int64_t(b) * p.Hq + h) * p.Nq, d.kc + (std::int64_t(b) * p.Hkv + hk) * p.Nk, p.q_offset};
  }
};

template <>
struct DeviceBinder<MoBA> {
  struct Data {
    const std::uint64_t* bits;
    std::int64_t words;
  };
  template <class T>
  static Data prepare(const MoBA& m, const PrepassInputs<T>& in, Workspace& ws, cudaStream_t s) {
    const ProblemInfo& p = in.p;
    require(m.top_k <= TopList::capacity, "mask.top_k", "the CUDA backend keeps at most 64 blocks per query");
    const int nkb = int(m.k_blocks(p.Nk)), words = int(m.words_per_row(p.Nk));
    float* kmeans = ws.alloc<float>(std::size_t(p.B * p.Hkv * nkb * p.D));
    std::uint64_t* bits = ws.alloc<std::uint64_t>(std::size_t(p.B * p.Hq * p.Nq * words));
    if (nkb > 0) {
      block_means_kernel<<<dim3(unsigned(nkb), unsigned(p.B * p.Hkv)), means_warps * 32, 0, s>>>(
          in.k, in.ks[0], in.ks[1], in.ks[2], int(p.Hkv), int(p.Nk), int(p.D), 0, int(p.Nk), int(m.block), nkb, kmeans);
      check(cudaGetLastError(), "block_means_kernel (keys)");
    }
    const MoBARoute<T> route{in, int(m.block), nkb, words, int(m.top_k), moba_rows_aligned(in), bits};
    launch_route(route, int(p.Nq), kmeans, p, nkb, s, "route_kernel (MoBA)");
    return {bits, words};
  }
  __device__ static MoBARows bind(const MoBA& m, const Data& d, const ProblemInfo& p, int b, int h, int) {
    return {d.bits + (std::int64_t(b) * p.Hq + h) * p.Nq * d.words, d.words, p.q_offset, m.block};
  }
};

template <class Base>
struct DeviceBinder<TopKBlocks<Base>> {
  static_assert(!is_content_dependent<Base>(), "attnkit::cuda: TopKBlocks needs a static base mask on the GPU");
  struct Data {
    const unsigned char* bitmap;
    std::int64_t nqb, nkb;
  };
  template <class T>
  static Data prepare(const TopKBlocks<Base>& m, const PrepassInputs<T>& in, Workspace& ws, cudaStream_t s) {
    const ProblemInfo& p = in.p;
    require(m.k <= TopList::capacity, "mask.k", "the CUDA backend keeps at most 64 blocks per query block");
    const int nqb = int(m.q_blocks(p)), nkb = int(m.k_blocks(p));
    float* qmeans = ws.alloc<float>(std::size_t(p.B * p.Hq * nqb * p.D));
    float* kmeans = ws.alloc<float>(std::size_t(p.B * p.Hkv * nkb * p.D));
    unsigned char* bitmap = ws.alloc<unsigned char>(std::size_t(p.B * p.Hq * nqb * nkb));
    // query blocks are in positions: rows [qb * bq - q_offset, ...) of the query tensor
    block_means_kernel<<<dim3(unsigned(nqb), unsigned(p.B * p.Hq)), means_warps * 32, 0, s>>>(
        in.q, in.qs[0], in.qs[1], in.qs[2], int(p.Hq), int(p.Nq), int(p.D), int(p.q_offset), int(p.Nq), int(m.block_q),
        nqb, qmeans);
    check(cudaGetLastError(), "block_means_kernel (queries)");
    if (nkb > 0) {
      block_means_kernel<<<dim3(unsigned(nkb), unsigned(p.B * p.Hkv)), means_warps * 32, 0, s>>>(
          in.k, in.ks[0], in.ks[1], in.ks[2], int(p.Hkv), int(p.Nk), int(p.D), 0, int(p.Nk), int(m.block_k), nkb, kmeans);
      check(cudaGetLastError(), "block_means_kernel (keys)");
    }
    const TopKBlocksRoute<Base> route{p, m.base, qmeans, int(m.block_q), int(m.block_k), nqb, nkb, int(m.k), bitmap};
    launch_route(route, nqb, kmeans, p, nkb, s, "route_kernel (TopKBlocks)");
    return {bitmap, nqb, nkb};
  }
  __device__ static auto bind(const TopKBlocks<Base>& m, const Data& d, const ProblemInfo& p, int b, int h, int hk) {
    const BlockMask blocks{d.bitmap + (std::int64_t(b) * p.Hq + h) * d.nqb * d.nkb, d.nqb, d.nkb, m.block_q, m.block_k};
    return And<BlockMask, Base>{blocks, m.base};
  }
};

}  // namespace detail
}  // namespace attnkit::cuda
