#include "../matrix.hpp"
#include "support_cuda.hpp"
using namespace attnkit;
using namespace attnkit::test;
TEST_CASE("cuda: linear x one mask per code path in bf16, full and causal in f16, every shape, match the fp64 reference", "[cuda][matrix]") {
  test::check_masks_cuda<test::OnePerPath, test::FullAndCausal>(Linear<EluPlusOne>{});
}

TEST_CASE("cuda: chunked linear attention split into many sequence segments agrees with the quadratic form", "[cuda][linear]") {
  // Enough heads that the chunks split into segments of several chunks, each started from
  // prefix sums of smaller state segments: GQA, queries past the last key and before key 0,
  // a partial second value slice, unaligned rows.
  for (const Shape& s : {Shape{1, 32, 8, 4000, 4096, 128, 128, false, {}}, Shape{1, 32, 8, 4200, 4096, 64, 72, true, index_t(-50)},
                         Shape{2, 16, 16, 2500, 2600, 40, 36, false, index_t(200)}}) {
    Tensor<bfloat16, ManagedAllocator<bfloat16>> q(s, s.Hq, s.Nq, s.D), k(s, s.Hkv, s.Nk, s.D), v(s, s.Hkv, s.Nk, s.Dv);
    Tensor<float, ManagedAllocator<float>> chunked(s, s.Hq, s.Nq, s.Dv), quadratic(s, s.Hq, s.Nq, s.Dv);
    fill_normal(q), fill_normal(k), fill_normal(v);
    Options opt;
    opt.q_offset = s.q_offset;
    INFO(s.str());
    // Causal & Full and Full & Full are the same masks through the quadratic kernel.
    cuda::run(make_attention(Linear<EluPlusOne>{}, Causal{}), q.cview(), k.cview(), v.cview(), chunked.view, opt);
    cuda::run(make_attention(Linear<EluPlusOne>{}, Causal{} & Full{}), q.cview(), k.cview(), v.cview(), quadratic.view, opt);
    cuda::check(cudaDeviceSynchronize(), "sync");
    REQUIRE(rel_error(chunked.floats(), quadratic.floats()) < 1e-2);
    cuda::run(make_attention(Linear<Relu>{{}, false}, Full{}), q.cview(), k.cview(), v.cview(), chunked.view, opt);
    cuda::run(make_attention(Linear<Relu>{{}, false}, Full{} & Full{}), q.cview(), k.cview(), v.cview(), quadratic.view, opt);
    cuda::check(cudaDeviceSynchronize(), "sync");
    REQUIRE(rel_error(chunked.floats(), quadratic.floats()) < 1e-2);
  }
}
