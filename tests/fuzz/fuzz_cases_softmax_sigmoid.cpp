// by_mask of the fuzz harness for softmax and sigmoid in every dtype (see fuzz_cases.hpp).
#include "fuzz_cases.hpp"

namespace attnkit::fuzz {
template void by_mask<float, Softmax>(const Softmax&, Bytes&, Case&, std::mt19937&, float, Options);
template void by_mask<float, Sigmoid>(const Sigmoid&, Bytes&, Case&, std::mt19937&, float, Options);
template void by_mask<bfloat16, Softmax>(const Softmax&, Bytes&, Case&, std::mt19937&, float, Options);
template void by_mask<bfloat16, Sigmoid>(const Sigmoid&, Bytes&, Case&, std::mt19937&, float, Options);
template void by_mask<half, Softmax>(const Softmax&, Bytes&, Case&, std::mt19937&, float, Options);
template void by_mask<half, Sigmoid>(const Sigmoid&, Bytes&, Case&, std::mt19937&, float, Options);
}  // namespace attnkit::fuzz
