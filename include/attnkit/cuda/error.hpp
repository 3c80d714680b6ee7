#pragma once
// CUDA runtime errors as exceptions: every runtime call of the backend goes through check().
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

#include "../core/error.hpp"

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

// Pointers the kernels read must be device (or managed) memory: a clear error instead of an
// illegal-address fault at some later synchronisation.
inline void require_device_memory(const void* ptr, const char* name) {
  if (ptr == nullptr) return;  // empty tensors; make_problem rejects null non-empty ones
  cudaPointerAttributes at{};
  const cudaError_t e = cudaPointerGetAttributes(&at, ptr);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw cuda_error(e, std::string("cudaPointerGetAttributes(") + name + ")");
  }
  require(at.type == cudaMemoryTypeDevice || at.type == cudaMemoryTypeManaged, name,
          "must point to device or managed memory for the CUDA backend");
}

}  // namespace attnkit::cuda
