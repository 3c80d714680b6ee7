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

#include <cstdint>
#include <mutex>

#include "../core/problem.hpp"
#include "../mask/block.hpp"
#include "../mask/combinators.hpp"
#include "../mask/routing.hpp"
#include "../mask/topk.hpp"
#include "error.hpp"
#include "ptx.hpp"

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

// Nearest centroid (Euclidean, ties to the lower index) of every row of a [B, H, N, D] view.
template <class T>
__global__ void nearest_centroid_kernel(const T* x, std::int64_t s0, std::int64_t s1, std::int64_t s2, int B, int H,
                                        int N, int D, const float* centroids, int n_clusters, std::uint8_t* out) {
  const std::int64_t row = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= std::int64_t(B) * H * N) return;
  const int i = int(row % N), h = int((row / N) % H), b = int(row / (std::int64_t(N) * H));
  const T* xr = x + b * s0 + h * s1 + i * s2;
  float best = 0.f;
  int id = 0;
  for (int c = 0; c < n_clusters; ++c) {
    float d2 = 0.f;
    for (int d = 0; d < D; ++d) {
      const float t = ptx::to_f32(xr[d]) - centroids[c * D + d];
      d2 = fmaf(t, t, d2);
    }
    if (c == 0 || d2 < best) best = d2, id = c;
  }
  out[row] = std::uint8_t(id);
}

// Means over blocks of `block` rows: out[(b * H + h) * nblocks + blk][D].
template <class T>
__global__ void block_means_kernel(const T* x, std::int64_t s0, std::int64_t s1, std::int64_t s2, int H, int N, int D,
                                   int row0, int n_rows, int block, int nblocks, float* out) {
  const int blk = blockIdx.x, bh = blockIdx.y, b = bh / H, h = bh % H;
  const int lo = max(0, blk * block - row0), hi = min(n_rows, (blk + 1) * block - row0);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float sum = 0.f;
    for (int i = lo; i < hi; ++i) sum += ptx::to_f32(x[b * s0 + h * s1 + std::int64_t(i) * s2 + d]);
    out[(std::int64_t(bh) * nblocks + blk) * D + d] = hi > lo ? sum / float(hi - lo) : 0.f;
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

// MoBA routing bits per query row: its own block and the top_k - 1 best earlier blocks.
template <class T>
__global__ void moba_route_kernel(PrepassInputs<T> in, const float* kmeans, int block, int nkb, int words, int top_k,
                                  std::uint64_t* bits) {
  const ProblemInfo& p = in.p;
  const std::int64_t row = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int Nq = int(p.Nq), Hq = int(p.Hq), D = int(p.D);
  if (row >= std::int64_t(p.B) * Hq * Nq) return;
  const int i = int(row % Nq), h = int((row / Nq) % Hq), b = int(row / (std::int64_t(Nq) * Hq));
  const int hk = int(h / p.group());
  const T* q = in.q + b * in.qs[0] + h * in.qs[1] + i * in.qs[2];
  const float* km = kmeans + (std::int64_t(b) * p.Hkv + hk) * nkb * D;
  const std::int64_t pos = p.pos(i), own = pos / block;
  std::uint64_t* out = bits + row * words;
  for (int w = 0; w < words; ++w) out[w] = 0;
  if (own < nkb) out[own / 64] |= std::uint64_t(1) << (own % 64);
  TopList top;
  const int last = int(own < nkb ? own : nkb);
  for (int kb = 0; kb < last; ++kb) {
    float s = 0.f;
    for (int d = 0; d < D; ++d) s = fmaf(ptx::to_f32(q[d]), km[std::int64_t(kb) * D + d], s);
    top.offer(s, kb, top_k - 1);
  }
  for (int e = 0; e < top.n; ++e) out[top.index[e] / 64] |= std::uint64_t(1) << (top.index[e] % 64);
}

// TopKBlocks: per (batch, head, query block) the k key blocks with the best pooled score among
// those the base mask allows for the block's queries.
template <class Base>
__global__ void topk_blocks_kernel(ProblemInfo p, Base base, const float* qmeans, const float* kmeans, int bq, int bk,
                                   int nqb, int nkb, int k, unsigned char* bitmap) {
  const std::int64_t item = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (item >= std::int64_t(p.B) * p.Hq * nqb) return;
  const int qb = int(item % nqb), bh = int(item / nqb), b = bh / int(p.Hq), h = bh % int(p.Hq);
  const int hk = int(h / p.group()), D = int(p.D);
  unsigned char* out = bitmap + item * nkb;
  for (int kb = 0; kb < nkb; ++kb) out[kb] = 0;
  const std::int64_t i_lo = std::int64_t(qb) * bq - p.q_offset > 0 ? std::int64_t(qb) * bq - p.q_offset : 0;
  const std::int64_t i_hi = std::int64_t(qb + 1) * bq - p.q_offset < p.Nq ? std::int64_t(qb + 1) * bq - p.q_offset : p.Nq;
  if (i_lo >= i_hi) return;
  const float* qm = qmeans + item * D;
  const float* km = kmeans + (std::int64_t(b) * p.Hkv + hk) * nkb * D;
  TopList top;
  for (int kb = 0; kb < nkb; ++kb) {
    const std::int64_t k_hi = std::int64_t(kb + 1) * bk < p.Nk ? std::int64_t(kb + 1) * bk : p.Nk;
    const TileRect r{p.pos(i_lo), p.pos(i_hi), std::int64_t(kb) * bk, k_hi};
    const TileKind kind = mask_classify(base, r);
    if (kind == TileKind::skip) continue;
    bool any = kind == TileKind::full;  // classification may be conservative: confirm a pair
    for (std::int64_t pos = r.q_lo; pos < r.q_hi && !any; ++pos)
      for (std::int64_t j = r.k_lo; j < r.k_hi && !any; ++j) any = base.allowed(pos, j);
    if (!any) continue;
    float s = 0.f;
    for (int d = 0; d < D; ++d) s = fmaf(qm[d], km[std::int64_t(kb) * D + d], s);
    top.offer(s, kb, k);
  }
  for (int e = 0; e < top.n; ++e) out[top.index[e]] = 1;
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
        in.q, in.qs[0], in.qs[1], in.qs[2], int(p.B), int(p.Hq), int(p.Nq), int(p.D), m.centroids, int(m.n_clusters), qc);
    check(cudaGetLastError(), "nearest_centroid_kernel (queries)");
    if (p.Nk > 0) {
      nearest_centroid_kernel<<<blocks_for(p.B * p.Hkv * p.Nk, nt), nt, 0, s>>>(
          in.k, in.ks[0], in.ks[1], in.ks[2], int(p.B), int(p.Hkv), int(p.Nk), int(p.D), m.centroids, int(m.n_clusters), kc);
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
      block_means_kernel<<<dim3(unsigned(nkb), unsigned(p.B * p.Hkv)), 128, 0, s>>>(
          in.k, in.ks[0], in.ks[1], in.ks[2], int(p.Hkv), int(p.Nk), int(p.D), 0, int(p.Nk), int(m.block), nkb, kmeans);
      check(cudaGetLastError(), "block_means_kernel (keys)");
    }
    moba_route_kernel<<<blocks_for(p.B * p.Hq * p.Nq, 128), 128, 0, s>>>(in, kmeans, int(m.block), nkb, words,
                                                                          int(m.top_k), bits);
    check(cudaGetLastError(), "moba_route_kernel");
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
    block_means_kernel<<<dim3(unsigned(nqb), unsigned(p.B * p.Hq)), 128, 0, s>>>(
        in.q, in.qs[0], in.qs[1], in.qs[2], int(p.Hq), int(p.Nq), int(p.D), int(p.q_offset), int(p.Nq), int(m.block_q),
        nqb, qmeans);
    check(cudaGetLastError(), "block_means_kernel (queries)");
    if (nkb > 0) {
      block_means_kernel<<<dim3(unsigned(nkb), unsigned(p.B * p.Hkv)), 128, 0, s>>>(
          in.k, in.ks[0], in.ks[1], in.ks[2], int(p.Hkv), int(p.Nk), int(p.D), 0, int(p.Nk), int(m.block_k), nkb, kmeans);
      check(cudaGetLastError(), "block_means_kernel (keys)");
    }
    topk_blocks_kernel<<<blocks_for(p.B * p.Hq * nqb, 64), 64, 0, s>>>(p, m.base, qmeans, kmeans, int(m.block_q),
                                                                       int(m.block_k), nqb, nkb, int(m.k), bitmap);
    check(cudaGetLastError(), "topk_blocks_kernel");
    return {bitmap, nqb, nkb};
  }
  __device__ static auto bind(const TopKBlocks<Base>& m, const Data& d, const ProblemInfo& p, int b, int h, int hk) {
    const BlockMask blocks{d.bitmap + (std::int64_t(b) * p.Hq + h) * d.nqb * d.nkb, d.nqb, d.nkb, m.block_q, m.block_k};
    return And<BlockMask, Base>{blocks, m.base};
  }
};

}  // namespace detail
}  // namespace attnkit::cuda
