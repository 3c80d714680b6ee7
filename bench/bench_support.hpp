#pragma once
// Support code for attnkit_bench: options, shared random inputs, the useful-work count of a
// variant (allowed (query, key) pairs, counted once and never timed), and a console reporter
// that also collects the results into a short markdown table.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <attnkit/attnkit.hpp>
#include <attnkit/reference/reference.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <streambuf>
#include <string>
#include <thread>
#include <tuple>
#include <vector>
#if __has_include(<sys/mman.h>)
#include <sys/mman.h>
#endif

namespace attnkit_bench {

using attnkit::index_t;

// ------------------------------------------------------------------------------- options

struct Config {
  std::vector<index_t> sizes{1024, 4096};
  std::vector<int> threads{1};
  index_t heads = 1;
  index_t D = 128;
  int reps = 3;      // repetitions (median reported when > 1)
  int ref_reps = 3;  // repetitions of the dense reference (~0.6 s per call at N=4096, D=128)
  double min_time = 0.3;
  bool check = false;     // compare each variant once with the fp64 reference (slow at large N)
  index_t decode_kv = 32768;  // decode benchmarks: keys per sequence (0: none)
  bool huge_pages = false;    // decode caches and the stream array on transparent huge pages
  std::string table_out;  // markdown table + header + raw console output
  std::string command;    // the command line, for the table header
};

inline Config& config() {
  static Config c;
  return c;
}

// Allocator of the large read-only arrays (decode caches, the stream array). With --huge_pages,
// blocks of 2 MiB and more are 2 MiB aligned and advised as transparent huge pages before their
// first touch, which a KV pool allocated once by an engine may be: the paged cache's rows of
// one head lie a page apart (NHD), one TLB entry per row on 4 KiB pages.
template <class T>
struct BigAllocator {
  using value_type = T;
  static constexpr std::size_t huge = std::size_t(2) << 20;
  BigAllocator() = default;
  template <class U>
  BigAllocator(const BigAllocator<U>&) noexcept {}
  static bool advised(std::size_t bytes) { return config().huge_pages && bytes >= huge; }
  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (!advised(bytes)) return static_cast<T*>(::operator new(bytes));
    void* p = ::operator new((bytes + huge - 1) / huge * huge, std::align_val_t{huge});
#if __has_include(<sys/mman.h>) && defined(MADV_HUGEPAGE)
    ::madvise(p, (bytes + huge - 1) / huge * huge, MADV_HUGEPAGE);  // (advice: failure is harmless)
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (!advised(n * sizeof(T))) return ::operator delete(p);
    ::operator delete(p, std::align_val_t{huge});
  }
  template <class U>
  bool operator==(const BigAllocator<U>&) const noexcept { return true; }
};
template <class T>
using big_vector = std::vector<T, BigAllocator<T>>;

template <class T>
std::vector<T> parse_list(const std::string& s) {
  std::vector<T> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(T(std::stoll(item)));
  return out;
}

inline const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

inline void print_usage() {
  std::printf(
      "attnkit_bench options (in addition to the --benchmark_* flags; each also reads an env var):\n"
      "  --threads=1,2        attnkit Options::threads and Eigen::setNbThreads   ATTNKIT_BENCH_THREADS\n"
      "  --sizes=1024,4096    sequence lengths N (= Nq = Nk)                    ATTNKIT_BENCH_SIZES\n"
      "  --heads=1            heads (Hq = Hkv), B = 1, D = 128                   ATTNKIT_BENCH_HEADS\n"
      "  --reps=3             repetitions, the median is reported                ATTNKIT_BENCH_REPS\n"
      "  --ref_reps=3         repetitions of the dense Eigen reference           ATTNKIT_BENCH_REF_REPS\n"
      "  --min_time=0.3       seconds per repetition                             ATTNKIT_BENCH_MIN_TIME\n"
      "  --table_out=FILE     write the markdown table (+ header, raw output)    ATTNKIT_BENCH_TABLE_OUT\n"
      "  --decode_kv=32768    KV length of the decode / stream-bandwidth rows     ATTNKIT_BENCH_DECODE_KV\n"
      "                       (0 skips them)\n"
      "  --huge_pages=1       decode caches and the stream array advised as      ATTNKIT_BENCH_HUGE_PAGES\n"
      "                       transparent huge pages (madvise), as an engine's KV pool may be\n"
      "  --check=1            also check each variant once against the fp64      ATTNKIT_BENCH_CHECK\n"
      "                       reference (counter rel_err; slow for N >= 4096)\n"
      "Use --benchmark_filter=REGEX to pick benchmarks (names: variant/dtype/N:../H:../T:..).\n");
}

// Reads our flags (and their env vars), removes the flags from argv, records the command line.
inline Config& parse_args(int& argc, char** argv) {
  Config& c = config();
  for (int i = 0; i < argc; ++i) c.command += (i ? " " : "") + std::string(argv[i]);
  auto apply = [&](const std::string& key, const std::string& val) {
    if (key == "threads")
      c.threads = parse_list<int>(val);
    else if (key == "sizes")
      c.sizes = parse_list<index_t>(val);
    else if (key == "heads")
      c.heads = std::stoll(val);
    else if (key == "reps")
      c.reps = std::stoi(val);
    else if (key == "ref_reps")
      c.ref_reps = std::stoi(val);
    else if (key == "min_time")
      c.min_time = std::stod(val);
    else if (key == "table_out")
      c.table_out = val;
    else if (key == "decode_kv")
      c.decode_kv = std::stoll(val);
    else if (key == "check")
      c.check = val != "0" && val != "false";
    else if (key == "huge_pages")
      c.huge_pages = val != "0" && val != "false";
    else
      return false;
    return true;
  };
  const std::pair<const char*, const char*> envs[] = {
      {"threads", "ATTNKIT_BENCH_THREADS"},     {"sizes", "ATTNKIT_BENCH_SIZES"},
      {"heads", "ATTNKIT_BENCH_HEADS"},         {"reps", "ATTNKIT_BENCH_REPS"},
      {"ref_reps", "ATTNKIT_BENCH_REF_REPS"},   {"min_time", "ATTNKIT_BENCH_MIN_TIME"},
      {"table_out", "ATTNKIT_BENCH_TABLE_OUT"}, {"check", "ATTNKIT_BENCH_CHECK"},
      {"decode_kv", "ATTNKIT_BENCH_DECODE_KV"}, {"huge_pages", "ATTNKIT_BENCH_HUGE_PAGES"}};
  for (const auto& [key, var] : envs)
    if (const char* v = env(var)) apply(key, v);
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      print_usage();
      argv[out++] = argv[i];  // benchmark prints its own flags too
      continue;
    }
    const auto eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos && apply(a.substr(2, eq - 2), a.substr(eq + 1))) continue;
    argv[out++] = argv[i];
  }
  argc = out;
  if (c.threads.empty()) c.threads = {1};
  c.reps = std::max(c.reps, 1);
  c.ref_reps = std::max(c.ref_reps, 1);
  return c;
}

// ------------------------------------------------------------------------------- inputs

template <class T>
struct QKV {
  std::vector<T> q, k, v;
};

// Q, K, V ~ N(0, 1), [1, H, N, D], in each storage type (the 16-bit ones rounded from float).
struct Inputs {
  index_t N, H, D;
  QKV<float> f32;
  QKV<attnkit::bfloat16> bf16;
  QKV<attnkit::half> f16;

  template <class T>
  const QKV<T>& get() const {
    if constexpr (std::is_same_v<T, float>)
      return f32;
    else if constexpr (std::is_same_v<T, attnkit::bfloat16>)
      return bf16;
    else
      return f16;
  }
  template <class T>
  attnkit::TensorView<const T> view(const std::vector<T>& x) const {
    return attnkit::bhsd(x.data(), 1, H, N, D);
  }
};

inline const Inputs& inputs(index_t N) {
  static std::map<index_t, std::unique_ptr<Inputs>> cache;
  auto& slot = cache[N];
  if (!slot) {
    const Config& c = config();
    slot = std::make_unique<Inputs>(Inputs{N, c.heads, c.D, {}, {}, {}});
    std::mt19937 gen(1234 + unsigned(N));
    std::normal_distribution<float> normal;
    const std::size_t n = std::size_t(N * c.heads * c.D);
    for (auto* x : {&slot->f32.q, &slot->f32.k, &slot->f32.v}) {
      x->resize(n);
      for (auto& e : *x) e = normal(gen);
    }
    auto convert = [&](auto& dst, const std::vector<float>& src) {
      using T = typename std::decay_t<decltype(dst)>::value_type;
      dst.resize(src.size());
      for (std::size_t i = 0; i < src.size(); ++i) dst[i] = T(src[i]);
    };
    convert(slot->bf16.q, slot->f32.q), convert(slot->bf16.k, slot->f32.k), convert(slot->bf16.v, slot->f32.v);
    convert(slot->f16.q, slot->f32.q), convert(slot->f16.k, slot->f32.k), convert(slot->f16.v, slot->f32.v);
  }
  return *slot;
}

// ------------------------------------------------------------------------------- useful work

// Allowed (query, key) pairs summed over heads: static masks by brute force on allowed(),
// content-dependent ones (top-k, routing) from the dense reference's own selection.
template <class Variant>
double allowed_pairs(const Variant& attn, const Inputs& in) {
  using M = typename Variant::mask_type;
  const index_t N = in.N;
  if constexpr (attnkit::is_content_dependent<M>()) {
    std::vector<float> o(in.f32.q.size());
    const auto Q = in.view(in.f32.q), K = in.view(in.f32.k), V = in.view(in.f32.v);
    double total = 0;
    for (index_t h = 0; h < in.H; ++h) {
      const auto sel = attnkit::reference::selection<float>(attn, Q, K, V, attnkit::bhsd(o.data(), 1, in.H, N, in.D),
                                                            attnkit::Options{}, 0, h);
      for (index_t e = 0; e < sel.size(); ++e) total += sel.data()[e] ? 1.0 : 0.0;
    }
    return total;
  } else {
    // Nq == Nk, so query i sits at position i (q_offset = 0).
    double per_head = 0;
    for (index_t i = 0; i < N; ++i) {
      index_t row = 0;
      for (index_t j = 0; j < N; ++j) row += attn.mask.allowed(i, j) ? 1 : 0;
      per_head += double(row);
    }
    return per_head * double(in.H);
  }
}

// ------------------------------------------------------------------------------- registry

// attention / reference / sgemm rows go to the GFLOP/s table, stream / decode rows (bytes
// read per second) to the bandwidth table.
enum class Kind { attention, reference, sgemm, stream, decode };

// What the table needs to know about one registered benchmark.
struct Entry {
  std::string label;  // table row name
  std::string dtype;
  Kind kind = Kind::attention;
  index_t N = 0;
  int threads = 1;
  double flops = 0;    // useful flops per call (allowed pairs x 4 x D)
  double density = 0;  // allowed pairs / (H N^2)
  double bytes = 0;    // bandwidth rows: bytes read per call (decode: K + V)
  bool warmed = false;
  double rel_err = -1;  // vs the fp64 reference, with --check
  std::string error;
};

inline Entry make_entry(std::string label, std::string dtype, Kind kind, index_t N, int threads) {
  Entry e;
  e.label = std::move(label), e.dtype = std::move(dtype), e.kind = kind, e.N = N, e.threads = threads;
  return e;
}

inline std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> r;
  return r;
}

// Useful work, cached per (variant label, N): the same for every thread count.
template <class Variant>
void ensure_work(Entry& e, const Variant& attn) {
  static std::map<std::string, std::pair<double, double>> cache;
  const std::string key = e.label + "/" + std::to_string(e.N);
  auto it = cache.find(key);
  if (it == cache.end()) {
    const Inputs& in = inputs(e.N);
    const double pairs = allowed_pairs(attn, in);
    it = cache
             .emplace(key,
                      std::make_pair(pairs * 4.0 * double(in.D), pairs / (double(in.H) * double(e.N) * double(e.N))))
             .first;
  }
  e.flops = it->second.first;
  e.density = it->second.second;
}

inline void set_counters(benchmark::State& st, const Entry& e) {
  st.counters["GFLOPs"] = benchmark::Counter(e.flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["density"] = benchmark::Counter(e.density);
  if (e.rel_err >= 0) st.counters["rel_err"] = benchmark::Counter(e.rel_err);
}

// ||o - ref|| / ||ref|| against attnkit::reference::attention<double> on the same inputs.
template <class T, class Variant>
double check_against_reference(const Variant& attn, const Inputs& in, const std::vector<T>& out) {
  const auto& d = in.get<T>();
  std::vector<float> ref(out.size());
  attnkit::reference::attention<double>(attn, in.view(d.q), in.view(d.k), in.view(d.v),
                                        attnkit::bhsd(ref.data(), 1, in.H, in.N, in.D));
  double e = 0, s = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double x = double(attnkit::to_float(out[i])) - ref[i];
    e += x * x, s += double(ref[i]) * ref[i];
  }
  return s > 0 ? std::sqrt(e / s) : std::sqrt(e);
}

template <class T>
bool all_finite(const std::vector<T>& x) {
  for (const T& e : x)
    if (!std::isfinite(attnkit::to_float(e))) return false;
  return true;
}

// ------------------------------------------------------------------------------- reporting

// A streambuf writing to two others (the console and an in-memory copy for --table_out).
class TeeBuf : public std::streambuf {
 public:
  TeeBuf(std::streambuf* a, std::streambuf* b) : a_(a), b_(b) {}

 protected:
  int overflow(int c) override {
    if (c == EOF) return !EOF;
    const int r1 = a_->sputc(char(c)), r2 = b_->sputc(char(c));
    return r1 == EOF || r2 == EOF ? EOF : c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    a_->sputn(s, n);
    return b_->sputn(s, n);
  }
  int sync() override { return a_->pubsync() | b_->pubsync(); }

 private:
  std::streambuf *a_, *b_;
};

struct Row {
  std::string name;
  double seconds = 0;  // real time per call (median over repetitions when there are several)
  bool from_median = false;
};

// The console reporter, plus collection of each benchmark's median (or only) run.
class TableReporter : public benchmark::ConsoleReporter {
 public:
  TableReporter() : ConsoleReporter(OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      const std::string name = r.run_name.function_name;
      if (r.error_occurred) {
        registry()[name].error = r.error_message;
        continue;
      }
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (r.run_type == Run::RT_Aggregate && !median) continue;
      auto it = rows_.find(name);
      if (it == rows_.end()) {
        order_.push_back(name);
        it = rows_.emplace(name, Row{name}).first;
      }
      if (it->second.from_median && !median) continue;
      it->second.seconds = r.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(r.time_unit);
      it->second.from_median = median;
    }
    ConsoleReporter::ReportRuns(runs);
  }

  const std::vector<std::string>& order() const { return order_; }
  const Row& row(const std::string& name) const { return rows_.at(name); }

 private:
  std::map<std::string, Row> rows_;
  std::vector<std::string> order_;
};

inline std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, model = "unknown CPU", flags;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0 && model == "unknown CPU") model = line.substr(line.find(':') + 2);
    if (line.rfind("flags", 0) == 0 && flags.empty()) flags = " " + line.substr(line.find(':') + 1) + " ";
  }
  std::string isa;
  for (const char* x : {"avx2", "fma", "avx512f"})
    if (flags.find(std::string(" ") + x + " ") != std::string::npos) isa += std::string(isa.empty() ? "" : "+") + x;
  std::ostringstream s;
  s << model << ", " << std::thread::hardware_concurrency() << " hardware threads" << (isa.empty() ? "" : ", " + isa);
  return s.str();
}

// 1-minute load average and the number of other running processes, to tell a quiet machine
// from a busy one (timings on 2 cores are meaningless while something else compiles).
inline std::string load_info() {
  std::ifstream f("/proc/loadavg");
  double l1 = 0, l5 = 0, l15 = 0;
  std::string running;
  f >> l1 >> l5 >> l15 >> running;
  std::ostringstream s;
  s << "load average " << std::fixed << std::setprecision(2) << l1 << " / " << l5 << " / " << l15
    << ", running/total tasks " << running;
  return s.str();
}

inline std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

inline std::string build_info() {
  std::ostringstream s;
#if defined(__clang__)
  s << "clang " << __clang_major__ << "." << __clang_minor__;
#elif defined(__GNUC__)
  s << "g++ " << __GNUC__ << "." << __GNUC_MINOR__;
#endif
#if defined(__OPTIMIZE__)
  s << ", optimised";
#else
  s << ", NOT optimised (-O0)";
#endif
#if defined(ATTNKIT_BENCH_BUILD)
  s << " (" << ATTNKIT_BENCH_BUILD << ")";
#endif
  s << ", SIMD " << xsimd::default_arch::name();
#if defined(__FMA__)
  s << "+fma";
#endif
#if defined(_OPENMP)
  s << "; Eigen: OpenMP, Eigen::setNbThreads(T)";
#else
  s << "; Eigen: single-threaded (built without OpenMP), whatever T says";
#endif
  return s.str();
}

inline std::string fmt(double x, int prec) {
  if (!(x > 0) || !std::isfinite(x)) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(prec) << x;
  return s.str();
}

// Short markdown table: one row per benchmark, ratios against the sgemm ceiling and the
// dense reference (softmax, full mask) of the same N and thread count.
inline std::string make_table(const TableReporter& rep) {
  auto find = [&](Kind kind, const std::string& label, index_t N, int T) -> const Row* {
    for (const auto& name : rep.order()) {
      const Entry& e = registry()[name];
      if (e.kind == kind && e.label == label && e.dtype == "f32" && e.N == N && e.threads == T) return &rep.row(name);
    }
    return nullptr;
  };
  auto gflops = [&](const std::string& name) {
    const Row& r = rep.row(name);
    return r.seconds > 0 ? registry()[name].flops / r.seconds * 1e-9 : 0.0;
  };
  std::ostringstream t;
  bool any = false;
  for (const auto& name : rep.order()) {
    const Entry& e = registry()[name];
    if (e.kind == Kind::stream || e.kind == Kind::decode) continue;
    if (!any)
      t << "| variant | dtype | N | T | time ms | density | GFLOP/s | vs sgemm | vs ref | speedup vs dense |\n"
        << "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    any = true;
    const Row& r = rep.row(name);
    const double g = gflops(name);
    const Row* sg = find(Kind::sgemm, "eigen sgemm (ceiling)", e.N, e.threads);
    const Row* ref = find(Kind::reference, "reference softmax full", e.N, e.threads);
    const Row* dense = find(Kind::attention, "softmax full", e.N, e.threads);
    auto ratio = [&](const Row* other) { return other ? fmt(g / gflops(other->name), 2) : std::string("-"); };
    std::string speed = "-";
    if (dense && e.kind == Kind::attention) speed = fmt(dense->seconds / r.seconds, 2);
    t << "| " << e.label << " | " << e.dtype << " | " << e.N << " | " << e.threads << " | " << fmt(r.seconds * 1e3, 2)
      << " | " << fmt(e.density, 3) << " | " << fmt(g, 1) << " | " << ratio(sg) << " | " << ratio(ref) << " | " << speed
      << " |\n";
  }
  for (const auto& [name, e] : registry())
    if (!e.error.empty()) t << "\nERROR " << name << ": " << e.error << "\n";
  return t.str();
}

// Bandwidth table: stream read and decode rows, GB/s of bytes read, ratio to the stream read
// of the same thread count.
inline std::string make_bandwidth_table(const TableReporter& rep) {
  auto gbs = [&](const std::string& name) {
    const Row& r = rep.row(name);
    return r.seconds > 0 ? registry()[name].bytes / r.seconds * 1e-9 : 0.0;
  };
  std::ostringstream t;
  bool any = false;
  for (const auto& name : rep.order()) {
    const Entry& e = registry()[name];
    if (e.kind != Kind::stream && e.kind != Kind::decode) continue;
    if (!any)
      t << "| bandwidth row | dtype | KV | T | time ms | MB read | GB/s | vs stream read | vs best read |\n"
        << "|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
    any = true;
    std::string ratio = "-";
    double best = 0;  // the fastest read of any bandwidth row with the same thread count
    for (const auto& other : rep.order()) {
      const Entry& s = registry()[other];
      if (s.kind == Kind::stream && s.threads == e.threads) ratio = fmt(gbs(name) / gbs(other), 2);
      if ((s.kind == Kind::stream || s.kind == Kind::decode) && s.threads == e.threads) best = std::max(best, gbs(other));
    }
    t << "| " << e.label << " | " << e.dtype << " | " << (e.kind == Kind::decode ? std::to_string(e.N) : "-") << " | "
      << e.threads << " | " << fmt(rep.row(name).seconds * 1e3, 2) << " | " << fmt(e.bytes * 1e-6, 0) << " | "
      << fmt(gbs(name), 1) << " | " << ratio << " | " << fmt(gbs(name) / best, 2) << " |\n";
  }
  return t.str();
}

inline std::string bandwidth_notes() {
  return "Decode rows: B=1, one query per sequence, D=128, KV = keys per sequence; bytes = K + V read "
         "(Hkv x KV x D x 2 x element size), through attnkit::cpu::run (dense [1, H, KV, D] cache) or "
         "cpu::run_paged (NHD pool, 16-token pages in shuffled order). stream read = a vectorised sum over "
         "a 1 GiB float array split over T threads (the machine's read bandwidth as a simple loop sees it). "
         "vs stream read = GB/s ratio to the stream read row of the same T. The decode kernel's chunked, "
         "software-prefetched reads can beat that loop, so vs best read = ratio to the fastest read of any "
         "row with the same T (stream or decode): the fraction of the best bandwidth observed on the machine.";
}

inline std::string table_notes() {
  const Config& c = config();
  std::ostringstream s;
  s << "B=1, H=" << c.heads << ", D=" << c.D << ", Nq=Nk=N, fp32 storage unless noted; random N(0,1) inputs. "
    << "time = median real time of " << c.reps << " repetition(s) (reference: " << c.ref_reps
    << ") of >= " << c.min_time << " s each. GFLOP/s counts USEFUL work: allowed (query, key) pairs x 4 x D "
    << "(linear attention runs the O(N D^2) chunked form for full/causal; its row still counts the "
       "quadratic-equivalent pairs). density = allowed pairs / N^2. vs sgemm / vs ref = GFLOP/s "
       "ratio to the Eigen sgemm row (the two GEMMs of dense attention, N x D x N and N x N x D) / to "
       "the dense Eigen reference (attnkit::reference::attention<float>, softmax, full mask), same N "
       "and T. speedup vs dense = time of the fused fp32 softmax full-mask row / this row's time.";
  return s.str();
}

}  // namespace attnkit_bench
