// Catch2 main of the GPU tests (Catch2 itself: tests/catch2_session.cpp): without a CUDA device
// they exit with code 77, which CTest reports as skipped (SKIP_RETURN_CODE), after saying why.
#include <cuda_runtime_api.h>

#include <cstdio>

#include "../catch2_session.hpp"

int main(int argc, char* argv[]) {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("attnkit: no CUDA GPU present (%s): skipping the GPU tests\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 77;
  }
  return attnkit::test::run_catch_session(argc, argv);
}
