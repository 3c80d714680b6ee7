// attnkit_bench_cuda: times attnkit::cuda::run on the workloads of DESIGN.md's anchor table
// with CUDA events (warm-up, then the median of many launches, random inputs, poisoned
// outputs checked for being written). Prints one JSON object per workload on stdout; the
// device script merges them with torch SDPA / FlexAttention timings of the same run.
//   attnkit_bench_cuda [--reps=30] [--only=substring | --only==exact row name] [--window_sweep]
#include <attnkit/cuda.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace attnkit;
using attnkit::cuda::check;

namespace {

__global__ void fill_uniform(bfloat16* x, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint32_t h = std::uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 16, h *= 0x7feb352du, h ^= h >> 15, h *= 0x846ca68bu, h ^= h >> 16;
    x[i] = cuda::ptx::from_f32<bfloat16>(float(h) * (2.f / 4294967296.f) - 1.f);
  }
}
__global__ void fill_nan(bfloat16* x, std::size_t n) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
    x[i].bits = 0x7fc0;
}
// Rows per (head, cluster) of a [1, H, N, D] tensor (nearest centroid, as the mask defines it):
// the cluster-routing row's exact pair count.
__global__ void cluster_sizes(const bfloat16* x, int H, int N, int D, const float* centroids, int C, unsigned* sizes) {
  const long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= (long long)H * N) return;
  const bfloat16* xr = x + row * D;
  float best = 0.f;
  int id = 0;
  for (int c = 0; c < C; ++c) {
    float d2 = 0.f;
    for (int d = 0; d < D; ++d) {
      const float t = cuda::ptx::to_f32(xr[d]) - centroids[c * D + d];
      d2 = fmaf(t, t, d2);
    }
    if (c == 0 || d2 < best) best = d2, id = c;
  }
  atomicAdd(&sizes[(row / N) * C + id], 1u);
}

// Holds the GPU for about `cycles` clocks: queued ahead of a timed call, it hides the host's
// enqueueing of that call, so the events around the call see GPU time only.
__global__ void spin(long long cycles) {
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
}
__global__ void count_bad(const bfloat16* x, std::size_t n, unsigned long long* bad) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
    if (!isfinite(cuda::ptx::to_f32(x[i]))) atomicAdd(bad, 1ull);
}

struct Buffers {
  bfloat16 *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  unsigned long long* bad = nullptr;
  std::size_t n = 0;
  explicit Buffers(std::size_t elems) : n(elems) {
    for (bfloat16** p : {&q, &k, &v, &o}) check(cudaMalloc(p, n * sizeof(bfloat16)), "cudaMalloc");
    check(cudaMalloc(&bad, sizeof(unsigned long long)), "cudaMalloc");
    fill_uniform<<<1024, 256>>>(q, n, 1u);
    fill_uniform<<<1024, 256>>>(k, n, 2u);
    fill_uniform<<<1024, 256>>>(v, n, 3u);
    check(cudaDeviceSynchronize(), "fill");
  }
  ~Buffers() {
    for (void* p : {(void*)q, (void*)k, (void*)v, (void*)o, (void*)bad}) cudaFree(p);
  }
};

int g_reps = 30;
std::string g_only;

// --only=substring, or --only==name for one row whose name is a substring of others'.
bool selected(const char* name) {
  if (g_only.empty()) return true;
  if (g_only[0] == '=') return g_only.compare(1, std::string::npos, name) == 0;
  return std::string(name).find(g_only) != std::string::npos;
}

// Times one variant; `pairs` = allowed (query, key) pairs per head (useful work).
template <class Variant>
void bench(const char* name, const Variant& attn, Buffers& buf, index_t B, index_t H, index_t N, index_t D, double pairs) {
  if (!selected(name)) return;
  const auto Q = bhsd<const bfloat16>(buf.q, B, H, N, D), K = bhsd<const bfloat16>(buf.k, B, H, N, D),
             V = bhsd<const bfloat16>(buf.v, B, H, N, D);
  const auto O = bhsd(buf.o, B, H, N, D);
  const std::size_t out_elems = std::size_t(B * H * N * D);
  fill_nan<<<1024, 256>>>(buf.o, out_elems);
  cuda::run(attn, Q, K, V, O);  // warm-up + written-output check
  check(cudaMemset(buf.bad, 0, sizeof(unsigned long long)), "cudaMemset");
  count_bad<<<1024, 256>>>(buf.o, out_elems, buf.bad);
  unsigned long long bad = 0;
  check(cudaMemcpy(&bad, buf.bad, sizeof bad, cudaMemcpyDeviceToHost), "cudaMemcpy");
  for (int w = 0; w < 3; ++w) cuda::run(attn, Q, K, V, O);
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "event"), check(cudaEventCreate(&e1), "event");
  std::vector<float> ms;
  for (int r = 0; r < g_reps; ++r) {
    check(cudaEventRecord(e0), "record");
    cuda::run(attn, Q, K, V, O);
    check(cudaEventRecord(e1), "record");
    check(cudaEventSynchronize(e1), "sync");
    float t = 0;
    check(cudaEventElapsedTime(&t, e0, e1), "elapsed");
    ms.push_back(t);
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  const double tflops = double(B * H) * pairs * 4.0 * double(D) / (med * 1e-3) / 1e12;
  std::printf("{\"workload\": \"%s\", \"B\": %lld, \"H\": %lld, \"N\": %lld, \"D\": %lld, \"ms\": %.4f, \"min_ms\": %.4f, "
              "\"tflops\": %.1f, \"density\": %.4f, \"unwritten_or_nonfinite\": %llu}\n",
              name, (long long)B, (long long)H, (long long)N, (long long)D, med, ms.front(), tflops,
              pairs / (double(N) * double(N)), bad);
  std::fflush(stdout);
}

// Decoding: one query per sequence against a long cache; reports the bandwidth of reading K
// and V (bytes of K+V / time), the figure an engine's decode step is bound by. page > 0:
// the cache lives in a paged pool with a shuffled block table.
template <class Variant>
void bench_decode(const char* name, const Variant& attn, index_t B, index_t Hq, index_t Hkv, index_t Nk, index_t D,
                  index_t page = 0, bool hnd = false, bool shuffle = true) {
  if (!selected(name)) return;
  const std::size_t kv_elems = std::size_t(B * Hkv * Nk * D);
  bfloat16 *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  check(cudaMalloc(&q, std::size_t(B * Hq * D) * 2), "cudaMalloc");
  check(cudaMalloc(&o, std::size_t(B * Hq * D) * 2), "cudaMalloc");
  check(cudaMalloc(&k, kv_elems * 2), "cudaMalloc");
  check(cudaMalloc(&v, kv_elems * 2), "cudaMalloc");
  fill_uniform<<<1024, 256>>>(q, std::size_t(B * Hq * D), 4u);
  fill_uniform<<<4096, 256>>>(k, kv_elems, 5u);
  fill_uniform<<<4096, 256>>>(v, kv_elems, 6u);
  std::int32_t *table = nullptr, *lens = nullptr, *qoff = nullptr;
  PagedKV<const bfloat16> kv;
  if (page > 0) {
    const index_t per_seq = Nk / page, pages = B * per_seq;
    std::vector<std::int32_t> ids(static_cast<std::size_t>(pages)), len(static_cast<std::size_t>(B), std::int32_t(Nk)),
        off(static_cast<std::size_t>(B + 1));
    for (index_t i = 0; i < pages; ++i) ids[i] = std::int32_t(i);
    std::uint32_t x = 12345;  // a fixed shuffle: pages of a sequence are scattered over the pool
    for (index_t i = pages - 1; shuffle && i > 0; --i) {
      x = x * 1664525u + 1013904223u;
      std::swap(ids[i], ids[x % std::uint32_t(i + 1)]);
    }
    for (index_t b = 0; b <= B; ++b) off[b] = std::int32_t(b);
    check(cudaMalloc(&table, ids.size() * 4), "cudaMalloc");
    check(cudaMalloc(&lens, len.size() * 4), "cudaMalloc");
    check(cudaMalloc(&qoff, off.size() * 4), "cudaMalloc");
    check(cudaMemcpy(table, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    check(cudaMemcpy(lens, len.data(), len.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    check(cudaMemcpy(qoff, off.data(), off.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    kv.k = hnd ? pool_hnd<const bfloat16>(k, page, Hkv, D) : pool_nhd<const bfloat16>(k, page, Hkv, D);
    kv.v = hnd ? pool_hnd<const bfloat16>(v, page, Hkv, D) : pool_nhd<const bfloat16>(v, page, Hkv, D);
    kv.block_table = table, kv.seq_lens = lens;
    kv.batch = B, kv.heads = Hkv, kv.dim = kv.dim_v = D, kv.page_size = page, kv.pages = pages;
    kv.table_stride = per_seq, kv.max_len = Nk;
  }
  check(cudaDeviceSynchronize(), "fill");
  const auto launch = [&] {
    if (page > 0)
      cuda::run_paged(attn, bshd<const bfloat16>(q, 1, B, Hq, D), RaggedRows{qoff, B, 1}, kv, bshd(o, 1, B, Hq, D));
    else
      cuda::run(attn, bhsd<const bfloat16>(q, B, Hq, 1, D), bhsd<const bfloat16>(k, B, Hkv, Nk, D),
                bhsd<const bfloat16>(v, B, Hkv, Nk, D), bhsd(o, B, Hq, 1, D));
  };
  fill_nan<<<64, 256>>>(o, std::size_t(B * Hq * D));
  launch();
  unsigned long long bad = 0, *dbad = nullptr;
  check(cudaMalloc(&dbad, sizeof bad), "cudaMalloc");
  check(cudaMemset(dbad, 0, sizeof bad), "cudaMemset");
  count_bad<<<64, 256>>>(o, std::size_t(B * Hq * D), dbad);
  check(cudaMemcpy(&bad, dbad, sizeof bad, cudaMemcpyDeviceToHost), "cudaMemcpy");
  for (int w = 0; w < 3; ++w) launch();
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "event"), check(cudaEventCreate(&e1), "event");
  std::vector<float> ms, gpu_ms;
  std::vector<double> host_us;  // the host time of one call (enqueueing it), inside the events
  for (int r = 0; r < g_reps; ++r) {
    check(cudaEventRecord(e0), "record");
    const auto h0 = std::chrono::steady_clock::now();
    launch();
    host_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - h0).count());
    check(cudaEventRecord(e1), "record");
    check(cudaEventSynchronize(e1), "sync");
    float t = 0;
    check(cudaEventElapsedTime(&t, e0, e1), "elapsed");
    ms.push_back(t);
    // The same call behind a ~250 us spin: its enqueueing overlaps the spin, so e0..e1 is the
    // GPU's time alone (the kernels and the gaps between them).
    spin<<<1, 1>>>(500000);
    check(cudaEventRecord(e0), "record");
    launch();
    check(cudaEventRecord(e1), "record");
    check(cudaEventSynchronize(e1), "sync");
    check(cudaEventElapsedTime(&t, e0, e1), "elapsed");
    gpu_ms.push_back(t);
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  std::sort(gpu_ms.begin(), gpu_ms.end());
  std::sort(host_us.begin(), host_us.end());
  const double med = ms[ms.size() / 2], gpu_med = gpu_ms[gpu_ms.size() / 2], bytes = 2.0 * double(kv_elems) * 2.0;
  std::printf("{\"workload\": \"%s\", \"kind\": \"decode\", \"B\": %lld, \"Hq\": %lld, \"Hkv\": %lld, \"Nk\": %lld, "
              "\"D\": %lld, \"page\": %lld, \"ms\": %.4f, \"min_ms\": %.4f, \"tbps\": %.3f, \"gpu_ms\": %.4f, "
              "\"gpu_tbps\": %.3f, \"host_us\": %.1f, \"unwritten_or_nonfinite\": %llu}\n",
              name, (long long)B, (long long)Hq, (long long)Hkv, (long long)Nk, (long long)D, (long long)page, med,
              ms.front(), bytes / (med * 1e-3) / 1e12, gpu_med, bytes / (gpu_med * 1e-3) / 1e12, host_us[host_us.size() / 2],
              bad);
  std::fflush(stdout);
  for (void* p : {(void*)q, (void*)k, (void*)v, (void*)o, (void*)table, (void*)lens, (void*)qoff, (void*)dbad}) cudaFree(p);
}

// Ragged prefill: sequences of different lengths packed into one batch-1 tensor (bshd), causal
// within each sequence; TFLOP/s of the useful pairs.
// Causal prefill of a ragged batch; page > 0: its keys and values in an NHD pool of pages of
// that many tokens, handed out in a shuffled order (run_paged), else packed rows (run_ragged).
void bench_ragged(const char* name, Buffers& buf, const std::vector<std::int32_t>& lens, index_t H, index_t D,
                  index_t page = 0) {
  if (!selected(name)) return;
  std::vector<std::int32_t> off(lens.size() + 1, 0);
  double pairs = 0;
  for (std::size_t b = 0; b < lens.size(); ++b) off[b + 1] = off[b] + lens[b], pairs += double(lens[b]) * (lens[b] + 1) / 2;
  const index_t total = off.back(), B = index_t(lens.size());
  const index_t longest = *std::max_element(lens.begin(), lens.end());
  std::vector<void*> owned;
  const auto upload = [&](const std::vector<std::int32_t>& x) {
    std::int32_t* d = nullptr;
    check(cudaMalloc(&d, x.size() * 4), "cudaMalloc");
    check(cudaMemcpy(d, x.data(), x.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    owned.push_back(d);
    return d;
  };
  const std::int32_t* doff = upload(off);
  const RaggedRows rows{doff, B, longest};
  PagedKV<const bfloat16> kv;
  if (page > 0) {
    const index_t per_seq = (longest + page - 1) / page, pages = B * per_seq;
    std::vector<std::int32_t> ids(static_cast<std::size_t>(pages));
    for (index_t i = 0; i < pages; ++i) ids[i] = std::int32_t(i);
    std::uint32_t x = 777;
    for (index_t i = pages - 1; i > 0; --i) x = x * 1664525u + 1013904223u, std::swap(ids[i], ids[x % std::uint32_t(i + 1)]);
    bfloat16 *kp = nullptr, *vp = nullptr;
    const std::size_t elems = std::size_t(pages * page * H * D);
    check(cudaMalloc(&kp, elems * 2), "cudaMalloc"), check(cudaMalloc(&vp, elems * 2), "cudaMalloc");
    owned.push_back(kp), owned.push_back(vp);
    fill_uniform<<<4096, 256>>>(kp, elems, 7u);
    fill_uniform<<<4096, 256>>>(vp, elems, 8u);
    kv.k = pool_nhd<const bfloat16>(kp, page, H, D), kv.v = pool_nhd<const bfloat16>(vp, page, H, D);
    kv.block_table = upload(ids), kv.seq_lens = upload(lens);
    kv.batch = B, kv.heads = H, kv.dim = kv.dim_v = D, kv.page_size = page, kv.pages = pages;
    kv.table_stride = per_seq, kv.max_len = longest;
  }
  const auto attn = make_attention(Softmax{}, Causal{});
  const auto launch = [&] {
    if (page > 0)
      cuda::run_paged(attn, bshd<const bfloat16>(buf.q, 1, total, H, D), rows, kv, bshd(buf.o, 1, total, H, D));
    else
      cuda::run_ragged(attn, bshd<const bfloat16>(buf.q, 1, total, H, D), bshd<const bfloat16>(buf.k, 1, total, H, D),
                       bshd<const bfloat16>(buf.v, 1, total, H, D), bshd(buf.o, 1, total, H, D), rows, rows);
  };
  for (int w = 0; w < 3; ++w) launch();
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "event"), check(cudaEventCreate(&e1), "event");
  std::vector<float> ms;
  for (int r = 0; r < g_reps; ++r) {
    check(cudaEventRecord(e0), "record");
    launch();
    check(cudaEventRecord(e1), "record");
    check(cudaEventSynchronize(e1), "sync");
    float t = 0;
    check(cudaEventElapsedTime(&t, e0, e1), "elapsed");
    ms.push_back(t);
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  for (void* ptr : owned) cudaFree(ptr);
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  std::printf("{\"workload\": \"%s\", \"B\": %lld, \"H\": %lld, \"N\": %lld, \"D\": %lld, \"ms\": %.4f, \"min_ms\": %.4f, "
              "\"tflops\": %.1f, \"density\": 0, \"unwritten_or_nonfinite\": 0}\n",
              name, (long long)B, (long long)H, (long long)total, (long long)D, med, ms.front(),
              double(H) * pairs * 4.0 * double(D) / (med * 1e-3) / 1e12);
  std::fflush(stdout);
}

// The block-sparse layout shared with compare_torch.py: 128 x 128 blocks, ~11% kept.
bool block_kept(index_t r, index_t c) { return (r * 73 + c * 151) % 9 == 0; }

}  // namespace

int main(int argc, char** argv) {
  bool window_sweep = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strncmp(argv[i], "--reps=", 7)) g_reps = std::atoi(argv[i] + 7);
    else if (!std::strncmp(argv[i], "--only=", 7)) g_only = argv[i] + 7;
    else if (!std::strcmp(argv[i], "--window_sweep")) window_sweep = true;
    else {
      std::fprintf(stderr, "usage: %s [--reps=30] [--only=substring | --only==exact row name] [--window_sweep]\n", argv[0]);
      return 2;
    }
  }
  try {
    const index_t N = 16384, D = 128, H = 16;
    Buffers buf(std::size_t(H * N * D));
    const double dense = double(N) * double(N), causal = double(N) * double(N + 1) / 2;
    if (window_sweep) {
      // Sliding windows from 1 to 65 key tiles per query tile (128 x 128 tiles): time against
      // tiles per CTA separates a CTA's fixed cost (prologue, epilogue) from the cost of a tile.
      for (const index_t W : {0, 127, 255, 511, 1023, 2047, 4095, 8191}) {
        double pairs = 0;
        for (index_t i = 0; i < N; ++i) pairs += double(std::min(i, W) + 1);
        const std::string name = "window " + std::to_string(W) + " N=16384 (sweep)";
        bench(name.c_str(), make_attention(Softmax{}, SlidingWindow{W, 0}), buf, 1, H, N, D, pairs);
      }
      return 0;
    }
    bench("dense N=16384", make_attention(Softmax{}, Full{}), buf, 1, H, N, D, dense);
    bench("causal N=16384", make_attention(Softmax{}, Causal{}), buf, 1, H, N, D, causal);
    bench("dense N=4096 D=64", make_attention(Softmax{}, Full{}), buf, 4, H, 4096, 64, 4096.0 * 4096.0);
    {
      const index_t W = 1024;
      double pairs = 0;
      for (index_t i = 0; i < N; ++i) pairs += double(std::min(i, W) + 1);
      bench("window 1024 N=16384", make_attention(Softmax{}, SlidingWindow{W, 0}), buf, 1, H, N, D, pairs);
    }
    {
      const index_t nb = N / 128;
      std::vector<unsigned char> bits(std::size_t(nb * nb));
      double kept = 0;
      for (index_t r = 0; r < nb; ++r)
        for (index_t c = 0; c < nb; ++c) kept += bits[r * nb + c] = block_kept(r, c);
      unsigned char* dbits = nullptr;
      check(cudaMalloc(&dbits, bits.size()), "cudaMalloc");
      check(cudaMemcpy(dbits, bits.data(), bits.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
      bench("block 11% N=16384", make_attention(Softmax{}, BlockMask{dbits, nb, nb, 128, 128}), buf, 1, H, N, D,
            kept * 128 * 128);
      cudaFree(dbits);
    }
    bench("nbhd2d 128x128 k13 N=16384", make_attention(Softmax{}, Neighborhood2D{{128, 128}, {13, 13}}), buf, 1, H, N, D,
          double(N) * 169);
    bench("sigmoid dense N=16384", make_attention(Sigmoid{}, Full{}), buf, 1, H, N, D, dense);
    bench("softplus dense N=16384", make_attention(Softplus{}, Full{}), buf, 1, H, N, D, dense);
    bench("linear causal N=16384 (chunked)", make_attention(Linear<EluPlusOne>{}, Causal{}), buf, 1, H, N, D, causal);
    bench("linear causal N=16384 (quadratic form)", make_attention(Linear<EluPlusOne>{}, Causal{} & Full{}), buf, 1, H, N, D,
          causal);
    bench("sigmoid causal N=16384", make_attention(Sigmoid{}, Causal{}), buf, 1, H, N, D, causal);
    bench("softplus causal N=16384", make_attention(Softplus{}, Causal{}), buf, 1, H, N, D, causal);
    {
      // MoBA: own block (causal inside) + top_k - 1 earlier blocks of 512: exact pair count.
      double pairs = 0;
      for (index_t i = 0; i < N; ++i) pairs += double(i % 512 + 1) + double(std::min<index_t>(i / 512, 2) * 512);
      bench("moba b512 top3 N=16384", make_attention(Softmax{}, MoBA{512, 3}), buf, 1, H, N, D, pairs);
      // Block top-k: min(12, qb + 1) key blocks of 128 per query block, counted as full blocks
      // (an upper bound: a chosen diagonal block is half empty), so TFLOP/s is an upper bound too.
      double bound = 0;
      for (index_t qb = 0; qb < N / 128; ++qb) bound += double(std::min<index_t>(12, qb + 1)) * 128 * 128;
      bench("topk-blocks 128 k12 causal N=16384 (work upper bound)", make_attention(Softmax{}, TopKBlocks<Causal>{12, 128, 128}),
            buf, 1, H, N, D, bound);
    }
    if (selected("cluster16 N=16384")) {
      // Routing Transformer clustering: 16 centroids, normal with sigma 0.25 (clusters of
      // roughly equal size for these inputs); pairs counted exactly from the cluster sizes.
      const int C = 16;
      std::vector<float> cent(std::size_t(C * D));
      std::mt19937 gen(7);
      std::normal_distribution<float> nd(0.f, 0.25f);
      for (auto& x : cent) x = nd(gen);
      float* dcent = nullptr;
      unsigned* dsizes = nullptr;
      check(cudaMalloc(&dcent, cent.size() * sizeof(float)), "cudaMalloc");
      check(cudaMalloc(&dsizes, std::size_t(2 * H * C) * sizeof(unsigned)), "cudaMalloc");
      check(cudaMemcpy(dcent, cent.data(), cent.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
      check(cudaMemset(dsizes, 0, std::size_t(2 * H * C) * sizeof(unsigned)), "cudaMemset");
      cluster_sizes<<<unsigned((H * N + 255) / 256), 256>>>(buf.q, int(H), int(N), int(D), dcent, C, dsizes);
      cluster_sizes<<<unsigned((H * N + 255) / 256), 256>>>(buf.k, int(H), int(N), int(D), dcent, C, dsizes + H * C);
      std::vector<unsigned> sizes(std::size_t(2 * H * C));
      check(cudaMemcpy(sizes.data(), dsizes, sizes.size() * sizeof(unsigned), cudaMemcpyDeviceToHost), "cudaMemcpy");
      double pairs = 0;  // per head on average (bench multiplies by H)
      for (index_t e = 0; e < H * C; ++e) pairs += double(sizes[e]) * double(sizes[H * C + e]) / double(H);
      bench("cluster16 N=16384", make_attention(Softmax{}, ClusterRouting{dcent, C}), buf, 1, H, N, D, pairs);
      cudaFree(dcent), cudaFree(dsizes);
    }
    const std::vector<std::int32_t> lens{4096, 3000, 2500, 2000, 1800, 1500, 900, 588};
    bench_ragged("ragged causal 8 sequences, 16384 tokens", buf, lens, H, D);
    bench_ragged("paged16 NHD prefill, causal 8 sequences, 16384 tokens", buf, lens, H, D, 16);
    // One long prompt among many short ones, not first in the batch: the dense grid of 64 x 64
    // query tiles per head would be 94% empty.
    std::vector<std::int32_t> skewed(64, 128);
    skewed[40] = 8192;
    bench_ragged("ragged causal skewed: 1 x 8192 + 63 x 128 tokens", buf, skewed, H, D);
    // Decoding, the setting of DESIGN.md's anchor: 8 sequences x 32 heads, a 32k cache, D = 128.
    bench_decode("decode B=8 H=32 KV=32768", make_attention(Softmax{}, Full{}), 8, 32, 32, 32768, 128);
    bench_decode("decode GQA B=8 Hq=32 Hkv=8 KV=32768", make_attention(Softmax{}, Full{}), 8, 32, 8, 32768, 128);
    bench_decode("decode paged16 NHD B=8 H=32 KV=32768", make_attention(Softmax{}, Causal{}), 8, 32, 32, 32768, 128, 16);
    bench_decode("decode paged16 HND B=8 H=32 KV=32768", make_attention(Softmax{}, Causal{}), 8, 32, 32, 32768, 128, 16, true);
    bench_decode("decode paged16 HND in-order B=8 H=32 KV=32768", make_attention(Softmax{}, Causal{}), 8, 32, 32, 32768, 128, 16, true, false);
    bench_decode("decode sigmoid B=8 H=32 KV=32768", make_attention(Sigmoid{}, Full{}), 8, 32, 32, 32768, 128);
    bench_decode("decode B=1 H=8 KV=131072", make_attention(Softmax{}, Full{}), 1, 8, 8, 131072, 128);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attnkit_bench_cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
