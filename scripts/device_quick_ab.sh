#!/usr/bin/env bash
# A lighter scripts/device_iterate.sh for one device call: builds only the GPU test binaries
# named in TESTS (and the benchmark against the baseline headers in ab_old/include and against
# include/), runs those tests, then times the benchmark rows matching FILTER on both sides,
# alternated over three rounds, and prints each row's values and the median ratio B/A.
#   git archive <base> include | tar -x -C ab_old     # baseline (ignored: carry it and .devdeps)
#   TESTS="test_cuda_matrix_softplus test_cuda_api" FILTER="softplus|dense N=16384" \
#     OUT=$OUT scripts/device_quick_ab.sh
# LOCAL=1 NO_BENCH=1 builds the tests without running them (a compile check on the host).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
f=(-O3 -DNDEBUG -gencode=arch=compute_90a,code=sm_90a -std=c++20 --expt-relaxed-constexpr -diag-suppress=20012)
inc=(-Iinclude -isystem .devdeps/eigen3 -isystem .devdeps/catch2 -isystem .devdeps)
start=$SECONDS
[[ -n ${NO_BENCH:-} ]] || { nvcc "${f[@]}" -Iab_old/include bench/cuda/bench_cuda.cu -o /tmp/bench_a > $OUT/ba.log 2>&1 & 
nvcc "${f[@]}" -Iinclude bench/cuda/bench_cuda.cu -o /tmp/bench_b > $OUT/bb.log 2>&1 & }
for t in ${TESTS:-}; do nvcc "${f[@]}" "${inc[@]}" -c tests/cuda/$t.cu -o /tmp/$t.o > $OUT/$t.build.log 2>&1 & done
g++ -O2 -std=c++20 "${inc[@]}" -I/usr/local/cuda/include -c tests/cuda/cuda_main.cpp -o /tmp/cm.o &
g++ -O2 -std=c++20 "${inc[@]}" -c tests/catch2_session.cpp -o /tmp/cs.o &
wait
echo "built in $((SECONDS - start)) s"
for t in ${TESTS:-}; do
  nvcc "${f[@]}" /tmp/$t.o /tmp/cm.o /tmp/cs.o -o /tmp/$t >> $OUT/$t.build.log 2>&1 || { echo "$t: build failed"; tail -5 $OUT/$t.build.log; continue; }
  [[ -n ${LOCAL:-} ]] && continue
  timeout 240 /tmp/$t ${TARGS:-} > $OUT/$t.log 2>&1; echo "$t: exit $? $(tail -2 $OUT/$t.log | tr '\n' ' ')"
done
[[ -n ${LOCAL:-}${NO_BENCH:-} ]] && exit 0
IFS='|' read -ra filters <<< "${FILTER:-softplus}"
for round in 1 2 3; do for s in a b; do
  for fl in "${filters[@]}"; do /tmp/bench_$s --only="$fl" >> $OUT/${s}_$round.jsonl; done
done; done
python3 - $OUT <<'PY'
import json,sys,collections
out=sys.argv[1]; rows=collections.defaultdict(dict)
for s in 'ab':
  for r in (1,2,3):
    for l in open(f"{out}/{s}_{r}.jsonl"):
      if l.startswith('{'):
        x=json.loads(l); k='tflops' if 'tflops' in x else 'tbps'
        rows[x['workload']].setdefault(s,[]).append(x[k])
        if x.get('unwritten_or_nonfinite'): print('WARNING', s, x['workload'])
for w,d in rows.items():
  a,b=d.get('a',[]),d.get('b',[])
  ma=sorted(a)[len(a)//2] if a else 0; mb=sorted(b)[len(b)//2] if b else 0
  print(f"{w[:55]:55s} A {' '.join('%.1f'%x for x in a):24s} B {' '.join('%.1f'%x for x in b):24s} B/A med {mb/ma if ma else 0:.3f}")
PY
