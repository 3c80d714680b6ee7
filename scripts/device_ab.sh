#!/usr/bin/env bash
# A/B of two versions of the headers on the device, in one call: builds bench/cuda/bench_cuda.cu
# against each include tree (in parallel, on the device's cores), then runs the benchmark rows
# matching each filter, alternating A, B, A, B so that clock drift hits both alike.
#   git archive HEAD include | tar -x -C ab_old      # the baseline, next to the working tree
#   scripts/device_ab.sh ab_old/include include "N=16384,D=64"      # results under $OUT
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/attnkit-out}
mkdir -p "$OUT"
a_inc=$1 b_inc=$2
IFS=, read -r -a filters <<< "${3:-N=16384}"
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
flags=(-O3 -DNDEBUG -gencode=arch=compute_90a,code=sm_90a -std=c++20 --expt-relaxed-constexpr -diag-suppress=20012)
start=$SECONDS
"$nvcc" "${flags[@]}" -I"$a_inc" bench/cuda/bench_cuda.cu -o /tmp/bench_a > "$OUT/build_a.log" 2>&1 & pa=$!
"$nvcc" "${flags[@]}" -I"$b_inc" bench/cuda/bench_cuda.cu -o /tmp/bench_b > "$OUT/build_b.log" 2>&1 & pb=$!
wait $pa || { echo "build A failed"; tail -20 "$OUT/build_a.log"; exit 1; }
wait $pb || { echo "build B failed"; tail -20 "$OUT/build_b.log"; exit 1; }
echo "built both in $((SECONDS - start)) s"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader
for round in 1 2; do
  for side in a b; do
    for f in "${filters[@]}"; do /tmp/bench_$side --only="$f"; done > "$OUT/${side}_$round.jsonl"
  done
done
python3 - "$OUT" <<'PY'
import json, sys, collections
out = sys.argv[1]
rows = collections.defaultdict(dict)
for side in "ab":
    for rnd in (1, 2):
        for l in open(f"{out}/{side}_{rnd}.jsonl"):
            if l.startswith("{"):
                r = json.loads(l)
                key = "tflops" if "tflops" in r else "tbps"
                rows[r["workload"]].setdefault(side, []).append(r[key])
                if r.get("unwritten_or_nonfinite"):
                    print(f"WARNING {side}: {r['workload']}: {r['unwritten_or_nonfinite']} outputs unwritten or not finite")
print(f"{'workload':58s} {'A':>15s} {'B':>15s}  B/A")
for w, d in rows.items():
    a, b = d.get("a", [0]), d.get("b", [0])
    fa = "/".join(f"{x:.1f}" for x in a)
    fb = "/".join(f"{x:.1f}" for x in b)
    print(f"{w:58s} {fa:>15s} {fb:>15s}  {max(b) / max(a):.3f}")
PY
