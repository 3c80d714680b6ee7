#!/usr/bin/env bash
# Builds the CPU tests and examples with AddressSanitizer + UndefinedBehaviorSanitizer
# (-O1 -g, -march=native; no CUDA, no benchmarks) and runs them with ctest. Any report from
# either sanitizer fails the test that triggered it. Of the CPU test matrix, the softmax
# unit's fp32 cells run here; the other score functions and the half and bfloat16 cells are
# left to scripts/fuzz.sh, which instantiates every score x mask x dtype under the same
# sanitizers (tests/CMakeLists.txt, tests/matrix_cpu.hpp).
#   scripts/sanitize.sh                       # clang++-14, build-asan/, JOBS = nproc
#   SANITIZE_CXX=g++ BUILD_DIR=build-asan-gcc scripts/sanitize.sh
#
# Clang by default: it compiles the test matrix about 1.6x faster than GCC 12 under the
# sanitizers, and GCC 12 miscompiles ASan's detect_stack_use_after_return with AVX-512: it
# keeps 64-byte alignment for locals that ASan moves to its fake stack (32-byte aligned) and
# faults on an aligned vmovdqa64 store (a SEGV inside Plan::load_head with -march=native -O1).
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${SANITIZE_CXX:-clang++-14}
if [[ $cxx == clang++-14 ]]; then scripts/deps.sh clang-14 libclang-rt-14-dev; else scripts/deps.sh; fi

build=${BUILD_DIR:-build-asan}
jobs=${JOBS:-$(nproc)}
san=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)

# ATTNKIT_SANITIZE instruments the tests (through attnkit_dev_flags); the examples are built
# with plain user flags, so the sanitizer flags also go into CMAKE_CXX_FLAGS to reach them.
# -O1 (not RelWithDebInfo's -O2): what ASan recommends, and it halves the build time. Line tables
# only (not full -g): reports keep their file:line frames, and the build is ~15% faster.
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only -DNDEBUG" -DATTNKIT_WERROR=ON -DATTNKIT_SANITIZE=ON \
      -DCMAKE_CXX_FLAGS="${san[*]}" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
      -DATTNKIT_BUILD_TESTS=ON -DATTNKIT_BUILD_EXAMPLES=ON -DATTNKIT_BUILD_BENCH=OFF \
      -DATTNKIT_ENABLE_CUDA=OFF > /dev/null
start=$(date +%s)
cmake --build "$build" -j "$jobs"
echo "attnkit: sanitizer build took $(( $(date +%s) - start )) s"

asan_options=detect_leaks=1:check_initialization_order=1:strict_init_order=1
if [[ $cxx == clang* ]]; then asan_options+=:detect_stack_use_after_return=1; fi  # see the top
export ASAN_OPTIONS=${ASAN_OPTIONS:-$asan_options}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
start=$(date +%s)
ctest --test-dir "$build" -j "$jobs" --output-on-failure
echo "attnkit: sanitizer tests took $(( $(date +%s) - start )) s"
