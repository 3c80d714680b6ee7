#!/usr/bin/env bash
# One device call to see where the forward kernel's warps stall: builds the CUDA benchmark alone
# (one nvcc), profiles one launch of each workload named in NCU with Nsight Compute's full set,
# and writes per-workload summaries plus the SASS-level source page (stall samples per
# instruction) as CSV. Logs come back as one tarball.
#   NCU="dense N=16384;sigmoid dense N=16384" scripts/device_profile.sh    # carry .devdeps
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/attnkit-out}; mkdir -p "$OUT"
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
start=$SECONDS
bin=${BIN:-/tmp/bench_p}   # BIN: an already built benchmark
[[ -n ${BIN:-} ]] || "$nvcc" -O3 -DNDEBUG -lineinfo -gencode=arch=compute_90a,code=sm_90a -std=c++20 --expt-relaxed-constexpr -diag-suppress=20012 \
  -Iinclude bench/cuda/bench_cuda.cu -o /tmp/bench_p > "$OUT/build.log" 2>&1 || { echo "build failed"; tail -30 "$OUT/build.log"; exit 1; }
echo "built in $((SECONDS - start)) s"
IFS=';' read -ra works <<< "${NCU:-dense N=16384}"
for w in "${works[@]}"; do
  tag=$(echo "$w" | tr -c 'a-zA-Z0-9\n' '_')
  timeout 200 "$ncu" --clock-control none -k regex:forward_kernel --launch-skip 2 --launch-count 1 --set full \
    --import-source no -o "$OUT/$tag" "$bin" --only="$w" --reps=1 > "$OUT/ncu_$tag.log" 2>&1; echo "ncu $w: exit $?"
  "$ncu" --import "$OUT/$tag.ncu-rep" --print-details all > "$OUT/details_$tag.txt" 2>&1
  "$ncu" --import "$OUT/$tag.ncu-rep" --page source --csv --print-source sass > "$OUT/sass_$tag.csv" 2>&1
  rm -f "$OUT/$tag.ncu-rep"
done
tar czf "$OUT/prof.tgz" -C "$OUT" $(cd "$OUT" && ls | grep -v -e '^build' -e 'tgz$') && (cd "$OUT" && ls | grep -v -e tgz -e '^build' | xargs rm -f)
echo "total $((SECONDS - start)) s"
