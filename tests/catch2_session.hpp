#pragma once
// Catch2's session, run from the CPU tests' main (test_main.cpp) and the GPU tests' main
// (cuda/cuda_main.cpp); its implementation compiles once, in catch2_session.cpp.
namespace attnkit::test {
int run_catch_session(int argc, char* argv[]);
}
