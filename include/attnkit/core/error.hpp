#pragma once
// Errors: every rejected call throws attnkit::invalid_argument naming the argument at fault,
// before any work is done. Backend failures (CUDA) throw attnkit::backend_error.
#include <concepts>
#include <stdexcept>
#include <string>
#include <utility>

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

// The message is built only when the check fails: every call validates its arguments, and a
// decode step is a few microseconds of work, so a message formatted on every call (std::string
// allocations, to_string) was a third of a small call's time. Pass a literal, or a callable
// returning the message.
inline void require(bool ok, const char* argument, const char* what) {
  if (!ok) [[unlikely]] throw invalid_argument(argument, what);
}
template <std::invocable F>
void require(bool ok, const char* argument, F&& what) {
  if (!ok) [[unlikely]] throw invalid_argument(argument, std::string(std::forward<F>(what)()));
}
inline void require(bool ok, const char* argument, const std::string& what) {  // (formatted eagerly)
  if (!ok) [[unlikely]] throw invalid_argument(argument, what);
}

}  // namespace attnkit
