// attnkit_bench: every CPU attention variant through attnkit::cpu::run, against the dense
// Eigen reference and an Eigen sgemm of the same shape (the GEMM ceiling), with GFLOP/s of
// useful work (allowed pairs x 4 x D) as a counter and a markdown summary table at the end.
//
//   attnkit_bench                                  # N = 1024, 4096; 1 thread
//   attnkit_bench --threads=1,2 --table_out=t.md   # 1 and 2 threads, table + raw output to t.md
//   attnkit_bench --heads=8 --benchmark_filter='softmax/full'
//   attnkit_bench --benchmark_filter='stream|decode' --threads=1,2   # decode bandwidth rows only
//   attnkit_bench --help                           # all options (and their env vars)
#include "bench_support.hpp"

namespace ab = attnkit_bench;
using namespace attnkit;
using ab::Entry;
using ab::Kind;

namespace {

void configure(benchmark::internal::Benchmark* b, int reps) {
  b->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(ab::config().min_time)->Repetitions(reps);
  if (reps > 1) b->ReportAggregatesOnly(true);
}

std::string bench_name(const std::string& slug, const char* dtype, index_t N, int T) {
  return slug + "/" + dtype + "/N:" + std::to_string(N) + "/H:" + std::to_string(ab::config().heads) +
         "/T:" + std::to_string(T);
}

// ------------------------------------------------------------------ fused attention (cpu::run)

template <class T, class Variant>
void bench_attention(benchmark::State& st, const std::string& name, const Variant& attn) {
  Entry& e = ab::registry()[name];
  try {
    ab::ensure_work(e, attn);  // counted once per (variant, N), never timed
    const ab::Inputs& in = ab::inputs(e.N);
    const auto& d = in.get<T>();
    std::vector<T> out(d.q.size());
    const auto Q = in.view(d.q), K = in.view(d.k), V = in.view(d.v);
    const auto O = bhsd(out.data(), 1, in.H, in.N, in.D);
    Options opt;
    opt.threads = e.threads;
    if (!e.warmed) {  // one untimed call: warms caches and checks the output
      cpu::run(attn, Q, K, V, O, opt);
      if (!ab::all_finite(out)) return st.SkipWithError("non-finite output");
      if (ab::config().check) e.rel_err = ab::check_against_reference(attn, in, out);
      e.warmed = true;
    }
    for (auto _ : st) {
      cpu::run(attn, Q, K, V, O, opt);
      benchmark::ClobberMemory();
    }
  } catch (const std::exception& ex) {
    return st.SkipWithError(ex.what());
  }
  ab::set_counters(st, e);
}

template <class T = float, class Variant>
void add_attention(const std::string& label, const std::string& slug, const Variant& attn, index_t N, int threads) {
  const std::string name = bench_name(slug, dtype_name<T>, N, threads);
  ab::registry()[name] = ab::make_entry(label, dtype_name<T>, Kind::attention, N, threads);
  configure(benchmark::RegisterBenchmark(name.c_str(),
                                         [name, attn](benchmark::State& st) { bench_attention<T>(st, name, attn); }),
            ab::config().reps);
}

// ------------------------------------------------------------------ dense Eigen reference

template <class Variant>
void bench_reference(benchmark::State& st, const std::string& name, const Variant& attn) {
  Entry& e = ab::registry()[name];
  try {
    ab::ensure_work(e, attn);
    const ab::Inputs& in = ab::inputs(e.N);
    std::vector<float> out(in.f32.q.size());
    const auto O = bhsd(out.data(), 1, in.H, in.N, in.D);
    Eigen::setNbThreads(e.threads);
    // No separate warm-up: one call takes ~0.5 s at N = 4096 and allocates its matrices anew.
    for (auto _ : st) {
      reference::attention<float>(attn, in.view(in.f32.q), in.view(in.f32.k), in.view(in.f32.v), O);
      benchmark::ClobberMemory();
    }
    if (!ab::all_finite(out)) return st.SkipWithError("non-finite output");
  } catch (const std::exception& ex) {
    return st.SkipWithError(ex.what());
  }
  ab::set_counters(st, e);
}

template <class Variant>
void add_reference(const std::string& label, const std::string& slug, const Variant& attn, index_t N, int threads) {
  const std::string name = bench_name(slug, "f32", N, threads);
  ab::registry()[name] = ab::make_entry(label, "f32", Kind::reference, N, threads);
  configure(benchmark::RegisterBenchmark(name.c_str(),
                                         [name, attn](benchmark::State& st) { bench_reference(st, name, attn); }),
            ab::config().ref_reps);
}

// ------------------------------------------------------------------ Eigen sgemm ceiling

// The two GEMMs of dense attention per head: S = Q K^T (N x D x N), O = S V (N x N x D).
void bench_sgemm(benchmark::State& st, const std::string& name) {
  Entry& e = ab::registry()[name];
  const index_t N = e.N, D = ab::config().D, H = ab::config().heads;
  e.flops = 4.0 * double(N) * double(N) * double(D) * double(H);
  e.density = 1.0;
  Eigen::setNbThreads(e.threads);
  const Eigen::MatrixXf q = Eigen::MatrixXf::Random(N, D), kt = Eigen::MatrixXf::Random(D, N),
                        v = Eigen::MatrixXf::Random(N, D);
  Eigen::MatrixXf s(N, N), o(N, D);
  auto once = [&] {
    for (index_t h = 0; h < H; ++h) {
      s.noalias() = q * kt;
      o.noalias() = s * v;
    }
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  };
  once();  // warm-up
  for (auto _ : st) once();
  ab::set_counters(st, e);
}

void add_sgemm(index_t N, int threads) {
  const std::string name = bench_name("eigen_sgemm", "f32", N, threads);
  ab::registry()[name] = ab::make_entry("eigen sgemm (ceiling)", "f32", Kind::sgemm, N, threads);
  configure(benchmark::RegisterBenchmark(name.c_str(), [name](benchmark::State& st) { bench_sgemm(st, name); }),
            ab::config().reps);
}

// ------------------------------------------------------------------ read bandwidth and decode

// Fills x with uniform values in [-1, 1) (xorshift: the decode caches hold up to 2^28 elements).
template <class Vec>
void fill_uniform(Vec& x, std::uint32_t seed) {
  using T = typename Vec::value_type;
  std::uint32_t r = seed | 1u;
  for (auto& e : x) {
    r ^= r << 13, r ^= r >> 17, r ^= r << 5;
    e = from_float<T>(float(r >> 8) * (2.f / 16777216.f) - 1.f);
  }
}

// The machine's read bandwidth: a vectorised sum over a 1 GiB float array (far beyond the
// LLC), split into T contiguous parts on T threads.
void bench_stream(benchmark::State& st, const std::string& name) {
  Entry& e = ab::registry()[name];
  static ab::big_vector<float> data;
  const index_t n = index_t(1) << 28;
  if (data.empty()) data.resize(std::size_t(n)), fill_uniform(data, 3);
  e.bytes = double(n) * sizeof(float);
  const int T = e.threads;
  std::vector<float> part(static_cast<std::size_t>(T));
  auto once = [&] {
    cpu::parallel_for(T, T, [&](index_t t, index_t, int) {
      constexpr index_t W = cpu::simd_width;
      const index_t lo = n * t / T, hi = n * (t + 1) / T;
      cpu::vfloat a0(0.f), a1(0.f), a2(0.f), a3(0.f);
      const float* x = data.data();
      for (index_t i = lo; i + 4 * W <= hi; i += 4 * W) {
        a0 += cpu::vfloat::load_unaligned(x + i), a1 += cpu::vfloat::load_unaligned(x + i + W);
        a2 += cpu::vfloat::load_unaligned(x + i + 2 * W), a3 += cpu::vfloat::load_unaligned(x + i + 3 * W);
      }
      part[std::size_t(t)] = xsimd::hadd((a0 + a1) + (a2 + a3));
    });
    benchmark::DoNotOptimize(part.data());
    benchmark::ClobberMemory();
  };
  once();
  for (auto _ : st) once();
}

void add_stream(int threads) {
  const std::string name = "stream_read/T:" + std::to_string(threads);
  ab::registry()[name] = ab::make_entry("stream read (1 GiB sum)", "f32", Kind::stream, 0, threads);
  configure(benchmark::RegisterBenchmark(name.c_str(), [name](benchmark::State& st) { bench_stream(st, name); }),
            ab::config().reps);
}

// One decoding step's inputs: q [1, Hq, 1, D] and a KV cache of `kv` tokens per kv head, both
// as a dense [1, Hkv, kv, D] view and as an NHD pool of 16-token pages in shuffled order.
template <class T>
struct DecodeInputs {
  static constexpr index_t page = 16;
  index_t Hq, Hkv, kv, D;
  std::vector<T> q;
  ab::big_vector<T> k, v, kpool, vpool;
  std::vector<std::int32_t> table, lens, qoff{0, 1};
  DecodeInputs(index_t hq, index_t hkv, index_t n, index_t d, bool paged) : Hq(hq), Hkv(hkv), kv(n), D(d) {
    q.resize(std::size_t(Hq * D));
    fill_uniform(q, 1);
    if (!paged) {
      k.resize(std::size_t(Hkv * kv * D)), v.resize(k.size());
      fill_uniform(k, 2), fill_uniform(v, 3);
      return;
    }
    const index_t pages = (kv + page - 1) / page;
    table.resize(std::size_t(pages));
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), std::mt19937(5));
    kpool.resize(std::size_t(pages * page * Hkv * D)), vpool.resize(kpool.size());
    fill_uniform(kpool, 2), fill_uniform(vpool, 3);
    lens = {std::int32_t(kv)};
  }
  PagedKV<const T> cache() const {
    const index_t pages = index_t(table.size());
    return {pool_nhd<const T>(kpool.data(), page, Hkv, D), pool_nhd<const T>(vpool.data(), page, Hkv, D), table.data(),
            lens.data(), 1, Hkv, D, D, page, pages, pages, kv};
  }
};

// The inputs of the most recent decode configuration only: caches of up to 1 GiB are not kept.
template <class T>
const DecodeInputs<T>& decode_inputs(index_t hq, index_t hkv, index_t kv, bool paged) {
  static std::unique_ptr<DecodeInputs<T>> cur;
  static std::tuple<index_t, index_t, index_t, bool> key{-1, -1, -1, false};
  if (!cur || key != std::make_tuple(hq, hkv, kv, paged)) {
    cur.reset();
    cur = std::make_unique<DecodeInputs<T>>(hq, hkv, kv, ab::config().D, paged);
    key = {hq, hkv, kv, paged};
  }
  return *cur;
}

template <class T>
void bench_decode(benchmark::State& st, const std::string& name, index_t hq, index_t hkv, bool paged) {
  Entry& e = ab::registry()[name];
  try {
    const DecodeInputs<T>& in = decode_inputs<T>(hq, hkv, e.N, paged);
    e.bytes = 2.0 * double(hkv) * double(e.N) * double(in.D) * sizeof(T);
    std::vector<float> out(std::size_t(hq * in.D));
    const auto attn = make_attention(Softmax{}, Causal{});
    const auto Q = bhsd(in.q.data(), 1, hq, 1, in.D);
    const auto O = bhsd(out.data(), 1, hq, 1, in.D);
    Options opt;
    opt.threads = e.threads;
    auto once = [&] {
      if (paged) cpu::run_paged(attn, Q, RaggedRows{in.qoff.data(), 1, 1}, in.cache(), O, opt);
      else cpu::run(attn, Q, bhsd(in.k.data(), 1, hkv, e.N, in.D), bhsd(in.v.data(), 1, hkv, e.N, in.D), O, opt);
    };
    once();
    if (!ab::all_finite(out)) return st.SkipWithError("non-finite output");
    for (auto _ : st) {
      once();
      benchmark::ClobberMemory();
    }
  } catch (const std::exception& ex) {
    return st.SkipWithError(ex.what());
  }
}

template <class T>
void add_decode(index_t hq, index_t hkv, bool paged, index_t kv, int threads) {
  const std::string shape = std::to_string(hq) + "/" + std::to_string(hkv);
  const std::string name = std::string("decode/") + (paged ? "paged16" : "dense") + "/Hq:" + std::to_string(hq) +
                           "/Hkv:" + std::to_string(hkv) + "/" + dtype_name<T> + "/KV:" + std::to_string(kv) +
                           "/T:" + std::to_string(threads);
  const std::string label = std::string("decode ") + (hq == hkv ? "MHA " : "GQA ") + shape + " heads, " +
                            (paged ? "paged (16)" : "dense");
  ab::registry()[name] = ab::make_entry(label, dtype_name<T>, Kind::decode, kv, threads);
  configure(benchmark::RegisterBenchmark(
                name.c_str(), [name, hq, hkv, paged](benchmark::State& st) { bench_decode<T>(st, name, hq, hkv, paged); }),
            ab::config().reps);
}

// ------------------------------------------------------------------ mask data

// Causal sliding window whose density (allowed pairs / N^2) is closest to `target`.
index_t window_for_density(index_t N, double target) {
  index_t best = 0;
  double best_err = 1e300;
  for (index_t w = 0; w < N; ++w) {
    // sum_i (min(i, w) + 1) over i in [0, N)
    const double pairs = double(std::min(w, N - 1) + 1) * double(N) - double(w) * double(w + 1) / 2.0;
    const double err = std::abs(pairs / (double(N) * double(N)) - target);
    if (err < best_err) best_err = err, best = w;
  }
  return best;
}

// Random block layout, fixed seed: each query block keeps round(10%) of the key blocks.
const std::vector<unsigned char>& block_layout(index_t blocks) {
  static std::map<index_t, std::vector<unsigned char>> cache;
  auto& bm = cache[blocks];
  if (bm.empty()) {
    bm.assign(std::size_t(blocks * blocks), 0);
    std::mt19937 gen(42);
    const index_t keep = std::max<index_t>(1, index_t(std::lround(0.1 * double(blocks))));
    std::vector<index_t> cols(static_cast<std::size_t>(blocks));
    for (index_t qb = 0; qb < blocks; ++qb) {
      std::iota(cols.begin(), cols.end(), index_t(0));
      std::shuffle(cols.begin(), cols.end(), gen);
      for (index_t t = 0; t < keep; ++t) bm[std::size_t(qb * blocks + cols[t])] = 1;
    }
  }
  return bm;
}

// Cluster centroids of equal norm sqrt(D), so that nearest-centroid routing splits random
// inputs roughly evenly (density ~ 1 / n_clusters).
const float* centroids(index_t n, index_t D) {
  static std::vector<float> c;
  if (c.empty()) {
    c.resize(std::size_t(n * D));
    std::mt19937 gen(7);
    std::normal_distribution<float> normal;
    for (index_t r = 0; r < n; ++r) {
      double norm = 0;
      for (index_t d = 0; d < D; ++d) norm += double(c[r * D + d] = normal(gen)) * c[r * D + d];
      const float f = float(std::sqrt(double(D) / norm));
      for (index_t d = 0; d < D; ++d) c[r * D + d] *= f;
    }
  }
  return c.data();
}

// ------------------------------------------------------------------ the benchmark list

void register_all(const ab::Config& cfg) {
  for (const index_t N : cfg.sizes)
    for (const int T : cfg.threads) {
      // score functions x {full, causal}
      add_attention("softmax full", "softmax/full", make_attention(Softmax{}, Full{}), N, T);
      add_attention("softmax causal", "softmax/causal", make_attention(Softmax{}, Causal{}), N, T);
      add_attention("sigmoid full", "sigmoid/full", make_attention(Sigmoid{}, Full{}), N, T);
      add_attention("sigmoid causal", "sigmoid/causal", make_attention(Sigmoid{}, Causal{}), N, T);
      add_attention("softplus full", "softplus/full", make_attention(Softplus{}, Full{}), N, T);
      add_attention("softplus causal", "softplus/causal", make_attention(Softplus{}, Causal{}), N, T);
      add_attention("linear full (chunked)", "linear/full", make_attention(Linear<>{}, Full{}), N, T);
      add_attention("linear causal (chunked)", "linear/causal", make_attention(Linear<>{}, Causal{}), N, T);

      // sparse softmax
      add_attention("softmax window 256", "softmax/window256", make_attention(Softmax{}, SlidingWindow{256, 0, 0}), N,
                    T);
      const index_t w90 = window_for_density(N, 0.10);
      add_attention("softmax window " + std::to_string(w90) + " (90% sparse)", "softmax/window90",
                    make_attention(Softmax{}, SlidingWindow{w90, 0, 0}), N, T);
      if (N % 64 == 0) {
        const index_t nb = N / 64;
        add_attention("softmax block64 (~10%)", "softmax/block64",
                      make_attention(Softmax{}, BlockMask{block_layout(nb).data(), nb, nb, 64, 64}), N, T);
      }
      const index_t g = index_t(std::lround(std::sqrt(double(N))));
      if (g * g == N) {
        const index_t kern = g >= 64 ? 13 : 9;
        add_attention("softmax nbhd2d " + std::to_string(g) + "x" + std::to_string(g) + " k" + std::to_string(kern),
                      "softmax/nbhd2d", make_attention(Softmax{}, Neighborhood2D{{g, g}, {kern, kern}}), N, T);
      }
      add_attention("softmax topk64 causal", "softmax/topk64_causal", make_attention(Softmax{}, TopK<Causal>{64}), N,
                    T);
      add_attention("softmax moba b64 top3", "softmax/moba", make_attention(Softmax{}, MoBA{64, 3}), N, T);
      add_attention("softmax cluster8", "softmax/cluster8",
                    make_attention(Softmax{}, ClusterRouting{centroids(8, cfg.D), 8}), N, T);

      // 16-bit storage
      add_attention<bfloat16>("softmax full", "softmax/full", make_attention(Softmax{}, Full{}), N, T);
      add_attention<half>("softmax full", "softmax/full", make_attention(Softmax{}, Full{}), N, T);

      // ceilings
      add_reference("reference softmax full", "reference/softmax/full", make_attention(Softmax{}, Full{}), N, T);
      add_reference("reference softmax causal", "reference/softmax/causal", make_attention(Softmax{}, Causal{}), N, T);
      add_sgemm(N, T);
    }
  // Bandwidth rows: the machine's read bandwidth, then decoding steps against it. Grouped by
  // configuration so each cache is built once.
  if (cfg.decode_kv > 0) {
    for (const int T : cfg.threads) add_stream(T);
    for (const auto& [hq, hkv] : {std::pair<index_t, index_t>{32, 8}, {32, 32}})
      for (const bool paged : {false, true}) {
        for (const int T : cfg.threads) add_decode<float>(hq, hkv, paged, cfg.decode_kv, T);
        for (const int T : cfg.threads) add_decode<bfloat16>(hq, hkv, paged, cfg.decode_kv, T);
      }
  }
}

}  // namespace

int main(int argc, char** argv) {
  ab::Config& cfg = ab::parse_args(argc, argv);
  register_all(cfg);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  // The console output also goes to a buffer, for the raw section of --table_out.
  std::ostringstream raw;
  ab::TeeBuf out_buf(std::cout.rdbuf(), raw.rdbuf()), err_buf(std::cerr.rdbuf(), raw.rdbuf());
  std::ostream out(&out_buf), err(&err_buf);
  ab::TableReporter reporter;
  reporter.SetOutputStream(&out);
  reporter.SetErrorStream(&err);
  const std::string load_before = ab::load_info();
  const auto start = std::chrono::steady_clock::now();
  benchmark::RunSpecifiedBenchmarks(&reporter);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out.flush();

  const std::string table = ab::make_table(reporter), bandwidth = ab::make_bandwidth_table(reporter);
  std::cout << "\n" << table << (bandwidth.empty() ? "" : "\n" + bandwidth) << std::flush;

  if (!cfg.table_out.empty()) {
    std::ofstream f(cfg.table_out);
    f << "# attnkit CPU benchmark\n\n"
      << "- machine: " << ab::cpu_model() << "\n"
      << "- date: " << ab::utc_now() << "\n"
      << "- command: `" << cfg.command << "`\n"
      << "- build: " << ab::build_info() << "\n"
      << "- wall time of the run: " << ab::fmt(wall, 0) << " s\n"
      << "- machine load: before the run " << load_before << "; after " << ab::load_info() << "\n\n"
      << (table.empty() ? "" : ab::table_notes() + "\n\n" + table + "\n")
      << (bandwidth.empty() ? "" : ab::bandwidth_notes() + "\n\n" + bandwidth + "\n")
      << "<details><summary>raw console output</summary>\n\n```\n"
      << raw.str() << "```\n\n</details>\n";
    if (!f) {
      std::cerr << "attnkit_bench: could not write " << cfg.table_out << "\n";
      return 1;
    }
    std::cout << "table written to " << cfg.table_out << "\n";
  }
  benchmark::Shutdown();
  return 0;
}
