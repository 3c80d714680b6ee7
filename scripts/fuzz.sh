#!/usr/bin/env bash
# Builds the libFuzzer target tests/fuzz/fuzz_attention.cpp (+ fuzz_cases_*.cpp; clang, ASan + UBSan) into
# build-fuzz/ and runs it for a bounded time, starting from a copy of the committed seed
# corpus tests/fuzz/corpus (which stays untouched). Any finding -- a sanitizer report, a
# mismatch with the reference, a crash, a timeout -- fails the script and prints the path
# of the reproducer.
#   scripts/fuzz.sh            # 60 s
#   scripts/fuzz.sh 600        # 10 minutes
#   FUZZ_ARGS="-seed=1" scripts/fuzz.sh 30
# Reproduce a finding: build-fuzz/fuzz_attention build-fuzz/artifacts/crash-<sha1>
#
# The seed corpus: 199 inputs of <= 23 bytes chosen from ~12 CPU-minutes of fuzzing (about
# 96k executions, 10k interesting inputs, 33.9k edges) by a greedy set cover over the edges
# each input reaches (the per-input COV lines of
#   build-fuzz/fuzz_attention -merge=1 -use_counters=0 -merge_control_file=ctl NEW_DIR OLD_DIR
# ). Those 199 replay ~80% of the edges; a full merge keeps ~1.7k files, since every
# score x mask x dtype instantiation owns its copy of each branch. 60 s of fuzzing from them
# gets back to ~97%. Beside them, 96 "wide" seeds (2026-11-27): for each half / bfloat16 x score
# x mask case, one of those seeds padded to 25 bytes with a last byte of 1, which asks the
# harness for head dims up to 128 and longer sequences (fuzz_attention.cpp); the sanitizer
# build leaves the test matrix's 16-bit cells to them.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [seconds]" >&2; exit 2; }
scripts/deps.sh clang-14 libclang-rt-14-dev

build=${FUZZ_BUILD_DIR:-build-fuzz}
cxx=${FUZZ_CXX:-clang++-14}
bin=$build/fuzz_attention
mkdir -p "$build"

# Rebuild when the flags, a source or a header they include (clang's depfiles) changed. The
# harness instantiates every score x mask x dtype; its three translation units compile side by
# side (598 s on two cores when written, ~1000 s by 2026-11-27; as one unit it took 1074 s).
# Line tables only: reproducer stacks keep file:line, the build is ~15% faster than with -g.
flags=(-std=c++20 -gline-tables-only -O1 -march=x86-64-v3 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -fno-omit-frame-pointer -Wall -Wextra -Werror -Iinclude -isystem /usr/include/eigen3)
srcs=(tests/fuzz/fuzz_attention.cpp tests/fuzz/fuzz_cases_softmax_sigmoid.cpp tests/fuzz/fuzz_cases_softplus_linear.cpp)
stamp=$build/flags.txt
stale=0
if [[ ! -x $bin || ! -f $stamp || "$(cat "$stamp")" != "$cxx ${flags[*]}" ]]; then stale=1; fi
for src in "${srcs[@]}"; do
  ((stale)) && break
  depfile=$build/$(basename "$src" .cpp).d
  [[ -f $depfile ]] || { stale=1; break; }
  for dep in $(sed -e 's/\\$//' -e 's/^[^:]*://' "$depfile"); do
    if [[ ! -e $dep || $dep -nt $bin ]]; then stale=1; break; fi
  done
done
if (( stale )); then
  echo "attnkit: building $bin"
  start=$(date +%s)
  pids=() objs=()
  for src in "${srcs[@]}"; do
    name=$(basename "$src" .cpp)
    objs+=("$build/$name.o")
    "$cxx" "${flags[@]}" -MMD -MF "$build/$name.d" -MT "$bin" -c "$src" -o "$build/$name.o" & pids+=("$!")
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || { kill "${pids[@]}" 2> /dev/null; echo "attnkit: fuzzer build failed" >&2; exit 1; }
  done
  "$cxx" "${flags[@]}" "${objs[@]}" -o "$bin.tmp"
  mv "$bin.tmp" "$bin"
  echo "$cxx ${flags[*]}" > "$stamp"
  echo "attnkit: fuzzer build took $(( $(date +%s) - start )) s"
fi

# Work on a copy of the seed corpus; new interesting inputs land there, never in git.
corpus=$build/corpus-run
artifacts=$build/artifacts
rm -rf "$corpus" "$artifacts"
mkdir -p "$corpus" "$artifacts"
if [[ -d tests/fuzz/corpus ]]; then cp -R tests/fuzz/corpus/. "$corpus"/; fi
echo "attnkit: fuzzing for $seconds s from $(find "$corpus" -type f | wc -l) seed inputs"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_stack_use_after_return=1:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
log=$build/fuzz.log
start=$(date +%s)
rc=0
# shellcheck disable=SC2086  # FUZZ_ARGS is a list of libFuzzer flags
"$bin" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -max_len=1024 -print_final_stats=1 \
       -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} "$corpus" > "$log" 2>&1 || rc=$?
elapsed=$(( $(date +%s) - start ))

runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
[[ -n $runs ]] || runs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
echo "attnkit: fuzzer ran ${runs:-?} inputs in $elapsed s (rc=$rc); log: $log"

findings=$(find "$artifacts" -type f | sort)
if (( rc != 0 )) || [[ -n $findings ]]; then
  tail -n 60 "$log" >&2
  echo "attnkit: FUZZING FOUND A PROBLEM (exit status $rc)" >&2
  for f in $findings; do
    echo "  reproducer: $f" >&2
    echo "  its bytes:  $(od -An -tu1 -v "$f" | tr -s ' \n' ' ')" >&2
    echo "  reproduce:  $bin $f" >&2
  done
  [[ -n $findings ]] || echo "  (no reproducer written; see $log)" >&2
  exit 1
fi
