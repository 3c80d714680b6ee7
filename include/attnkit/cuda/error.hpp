#pragma once
// CUDA runtime errors as exceptions: every runtime call of the backend goes through check().
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace attnkit::cuda {

class cuda_error : public std::runtime_error {
 public:
  cuda_error(cudaError_t code, const std::string& what)
      : std::runtime_error("attnkit: CUDA error in " + what + ": " + cudaGetErrorName(code) + " (" +
                           cudaGetErrorString(code) + ")"),
        code_(code) {}
  cudaError_t code() const { return code_; }

 private:
  cudaError_t code_;
};

inline void check(cudaError_t code, const char* what) {
  if (code != cudaSuccess) throw cuda_error(code, what);
}

}  // namespace attnkit::cuda
