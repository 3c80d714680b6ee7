// Catch2 main of the GPU tests: without a CUDA device they exit with code 77, which CTest
// reports as skipped (SKIP_RETURN_CODE), after saying why.
#define CATCH_CONFIG_RUNNER
#include <cuda_runtime_api.h>

#include <catch2/catch.hpp>
#include <cstdio>

int main(int argc, char* argv[]) {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("attnkit: no CUDA GPU present (%s): skipping the GPU tests\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
