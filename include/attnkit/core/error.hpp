#pragma once
// Errors: every rejected call throws attnkit::invalid_argument naming the argument at fault,
// before any work is done. Backend failures (CUDA) throw attnkit::backend_error.
#include <stdexcept>
#include <string>

namespace attnkit {

class invalid_argument : public std::invalid_argument {
 public:
  invalid_argument(std::string argument, const std::string& what)
      : std::invalid_argument("attnkit: invalid argument '" + argument + "': " + what),
        argument_(std::move(argument)) {}
  // Name of the offending argument, e.g. "k.shape", "mask.window".
  const std::string& argument() const noexcept { return argument_; }

 private:
  std::string argument_;
};

class backend_error : public std::runtime_error {
 public:
  explicit backend_error(const std::string& what) : std::runtime_error("attnkit: " + what) {}
};

inline void require(bool ok, const char* argument, const std::string& what) {
  if (!ok) throw invalid_argument(argument, what);
}

}  // namespace attnkit
