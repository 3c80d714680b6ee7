// Catch2's implementation, compiled once for the CPU and the GPU tests (~40 s of the compiler).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "catch2_session.hpp"

int attnkit::test::run_catch_session(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }
