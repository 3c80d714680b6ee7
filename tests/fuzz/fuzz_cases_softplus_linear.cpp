// by_mask of the fuzz harness for softplus and linear in every dtype (see fuzz_cases.hpp).
#include "fuzz_cases.hpp"

namespace attnkit::fuzz {
template void by_mask<float, Softplus>(const Softplus&, Bytes&, Case&, std::mt19937&, float, Options);
template void by_mask<float, Linear<>>(const Linear<>&, Bytes&, Case&, std::mt19937&, float, Options);
template void by_mask<bfloat16, Softplus>(const Softplus&, Bytes&, Case&, std::mt19937&, float, Options);
template void by_mask<bfloat16, Linear<>>(const Linear<>&, Bytes&, Case&, std::mt19937&, float, Options);
template void by_mask<half, Softplus>(const Softplus&, Bytes&, Case&, std::mt19937&, float, Options);
template void by_mask<half, Linear<>>(const Linear<>&, Bytes&, Case&, std::mt19937&, float, Options);
}  // namespace attnkit::fuzz
