// CUDA backend: 2-D and 3-D neighborhoods of a whole grid, which run on query and key
// patches (cuda/patch_tiles.cuh), against the fp64 reference. Its own translation unit: the
// patch kernels compile beside test_cuda_api, for the architecture of the device only.
#include "support_cuda.hpp"

using namespace attnkit;
using namespace attnkit::test;

namespace {
template <class T, class Variant>
void check(const Variant& attn, const Shape& s) {
  check_variant_on<T>(CudaBackend{}, attn, s, {}, {}, 1e-2);
}
}  // namespace

// 2-D and 3-D neighborhoods of a whole grid run on query and key patches (patch_tiles.cuh):
// grids that are not patch multiples, dilation, a causal axis, both tile shapes (D = 64 and
// 128), key patches 16 and 32 wide, GQA, both layouts, a modifier that reads the key index,
// and length-scaled scores.
TEST_CASE("cuda: neighborhoods tiled as patches", "[cuda]") {
  Neighborhood2D odd{{37, 45}, {7, 9}};
  check<bfloat16>(make_attention(Softmax{}, odd), Shape{1, 4, 2, 37 * 45, 37 * 45, 128, 128, false, {}});
  check<bfloat16>(make_attention(Softmax{}, odd), Shape{2, 2, 1, 37 * 45, 37 * 45, 64, 64, true, {}});
  Neighborhood2D dilated{{40, 100}, {5, 7}, {2, 3}};
  dilated.causal[0] = true;
  check<bfloat16>(make_attention(Softmax{}, dilated), Shape{1, 2, 2, 4000, 4000, 64, 48, true, {}});
  check<attnkit::half>(make_attention(Sigmoid{}, dilated), Shape{1, 2, 1, 4000, 4000, 128, 128, false, {}});
  const Neighborhood3D cube{{5, 12, 40}, {3, 5, 7}};
  check<bfloat16>(make_attention(Softmax{}, cube), Shape{1, 2, 1, 2400, 2400, 96, 80, false, {}});
  check<bfloat16>(make_attention(Softplus{2.f, LengthScale::log_n}, cube), Shape{1, 2, 1, 2400, 2400, 64, 64, true, {}});
  // key patches 16 wide (a large kernel) on both ranks, the 3-D one with its outer slot
  // bits split across two axes
  check<bfloat16>(make_attention(Softmax{}, Neighborhood2D{{64, 96}, {31, 21}}), Shape{1, 4, 2, 6144, 6144, 128, 128, true, {}});
  check<bfloat16>(make_attention(Softmax{}, Neighborhood3D{{6, 3, 40}, {3, 3, 7}}), Shape{1, 2, 1, 720, 720, 128, 128, false, {}});
  // the benchmark's window on a smaller grid, and a bias indexed by key
  check<bfloat16>(make_attention(Softmax{}, Neighborhood2D{{48, 128}, {13, 13}}), Shape{1, 1, 1, 6144, 6144, 128, 128, false, {}});
  std::vector<float, ManagedAllocator<float>> bias(std::size_t(37 * 45) * (37 * 45));
  std::normal_distribution<float> n;
  for (auto& x : bias) x = n(rng());
  check<bfloat16>(make_attention(Softmax{}, odd, AdditiveBias{bias.data(), 0, 0, 37 * 45, 1}),
                  Shape{1, 2, 1, 37 * 45, 37 * 45, 128, 128, false, {}});
}
