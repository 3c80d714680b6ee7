#!/usr/bin/env bash
# One device call for an iteration on the CUDA kernels: builds the GPU tests and the benchmark
# on the device's cores (scripts/build_on_device.sh) and, in parallel, the benchmark against the
# baseline headers in ab_old/include; runs the GPU tests named in TESTS; times the benchmark
# rows matching FILTER for both builds, alternating A, B, A, B; optionally profiles the rows in
# NCU with ncu. A third header tree in ab_c/include, if present, is timed as side C. Logs
# come back as one tarball (the device returns few files).
#   git archive HEAD include | tar -x -C ab_old     # the baseline (ab_old/ is ignored: carry it)
#   TESTS="test_cuda_api test_cuda_neighborhood" FILTER="N=16384|D=64" NCU="window block" \
#     scripts/device_iterate.sh                     # carry .devdeps and ab_old
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/attnkit-out}; mkdir -p "$OUT"
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
flags=(-O3 -DNDEBUG -gencode=arch=compute_90a,code=sm_90a -std=c++20 --expt-relaxed-constexpr -diag-suppress=20012)
start=$SECONDS
"$nvcc" "${flags[@]}" -Iab_old/include bench/cuda/bench_cuda.cu -o /tmp/bench_a > "$OUT/build_a.log" 2>&1 & pa=$!
pc=""
if [[ -d ab_c ]]; then "$nvcc" "${flags[@]}" -Iab_c/include bench/cuda/bench_cuda.cu -o /tmp/bench_c > "$OUT/build_c.log" 2>&1 & pc=$!; fi
if [[ -n ${BENCH_ONLY:-} ]]; then  # the benchmark alone, no tests
  "$nvcc" "${flags[@]}" -Iinclude bench/cuda/bench_cuda.cu -o /tmp/bench_b > "$OUT/build.log" 2>&1 || { echo "build failed"; tail -30 "$OUT/build.log"; }
else
  scripts/build_on_device.sh > "$OUT/build.log" 2>&1 || { echo "build failed"; tail -30 "$OUT/build.log"; }
fi
wait $pa || echo "build A failed"
[[ -n $pc ]] && { wait $pc || echo "build C failed"; }
echo "built in $((SECONDS - start)) s"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader
bin=build-device-bin
[[ -n ${BENCH_ONLY:-} ]] || cp build-device-bin/bench/cuda/attnkit_bench_cuda /tmp/bench_b
tests=${TESTS-test_cuda_api}; [[ -n ${BENCH_ONLY:-} ]] && tests=""
for t in $tests; do
  timeout 200 "$bin/tests/cuda/$t" > "$OUT/$t.log" 2>&1; echo "$t: exit $? $(tail -2 "$OUT/$t.log" | tr '\n' ' ')"
done
filter=${FILTER:-N=16384}
sides="a b"; [[ -x /tmp/bench_c ]] && sides="a b c"
IFS='|' read -ra filters <<< "$filter"  # several rows: FILTER="dense N=16384|softplus"
for round in 1 2; do for s in $sides; do
  : > "$OUT/${s}_$round.jsonl"
  for f in "${filters[@]}"; do
    # SM clock and power while this side runs these rows (the H100 is at its power cap).
    nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms 50 > /tmp/smi.csv 2>/dev/null & smi=$!
    /tmp/bench_$s --only="$f" >> "$OUT/${s}_$round.jsonl"
    kill $smi 2>/dev/null; wait $smi 2>/dev/null
    awk -F', *' -v s="$s" -v f="$f" '$1 > 1000 {n++; c += $1; p += $2} END {if (n) printf "%s %-32s %4.0f MHz %4.0f W (%d samples)\n", s, f, c / n, p / n, n}' /tmp/smi.csv >> "$OUT/clocks.txt"
  done
done; done
python3 - "$OUT" $sides <<'PY'
import json, sys, collections
out, sides = sys.argv[1], sys.argv[2:]
rows = collections.defaultdict(dict)
for s in sides:
    for rnd in (1, 2):
        for l in open(f"{out}/{s}_{rnd}.jsonl"):
            if l.startswith("{"):
                r = json.loads(l); k = "tflops" if "tflops" in r else "tbps"
                rows[r["workload"]].setdefault(s, []).append(r[k])
                if r.get("unwritten_or_nonfinite"): print("WARNING", s, r["workload"], r["unwritten_or_nonfinite"])
print(f"{'workload':56s} " + " ".join(f"{s:>13s}" for s in sides) + "  " + " ".join(f"{s}/a" for s in sides[1:]))
for w, d in rows.items():
    cells = " ".join(f"{'/'.join(f'{x:.1f}' for x in d.get(s, [0])):>13s}" for s in sides)
    ratios = " ".join(f"{max(d.get(s,[0]))/max(d.get('a',[1])):.3f}" for s in sides[1:])
    print(f"{w[:56]:56s} {cells}  {ratios}")
PY
[[ -f $OUT/clocks.txt ]] && sort -k2 "$OUT/clocks.txt"
if [[ -n ${NCU:-} ]]; then
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  for w in $NCU; do
    timeout 120 "$ncu" --clock-control none -k regex:forward_kernel --launch-skip 2 --launch-count 1 \
      --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
      /tmp/bench_b --only="$w" --reps=1 > "$OUT/ncu_${w%% *}.txt" 2>&1; echo "ncu $w: exit $?"
  done
fi
tar czf "$OUT/logs.tgz" -C "$OUT" $(cd "$OUT" && ls | grep -v -e '^build' -e 'tgz$') && (cd "$OUT" && ls | grep -v -e tgz -e '^build' | xargs rm -f)
echo "total $((SECONDS - start)) s"
