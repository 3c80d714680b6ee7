"""torch SDPA (flash and cuDNN backends) and FlexAttention on the workloads of
bench_cuda.cu, timed the same way (CUDA events, warm-up, median), in the same run.
Reads attnkit_bench_cuda's JSON lines, writes a markdown table with TFLOP/s and ratios.

    python3 compare_torch.py ours.jsonl table.md
"""
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

REPS = 30
flex = torch.compile(flex_attention, dynamic=False)


def timed(fn, gpu_alone=False):
    """Median ms of one call between CUDA events. gpu_alone: each call queued behind a ~250 us
    sleep kernel, so the host's enqueueing overlaps the sleep and the events see only the
    kernels and the gaps between them."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(REPS):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if gpu_alone:
            torch.cuda._sleep(500000)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def inputs(B, H, N, D):
    g = torch.Generator(device="cuda").manual_seed(0)
    return [torch.rand(B, H, N, D, device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1 for _ in range(3)]


def window_mod(W):
    return lambda b, h, q, kv: (kv <= q) & (q - kv <= W)


def block_mod(b, h, q, kv):
    return ((q // 128) * 73 + (kv // 128) * 151) % 9 == 0


def nbhd_mod(G, K):
    def mod(b, h, q, kv):
        qi, qj, ki, kj = q // G, q % G, kv // G, kv % G
        si = (qi - K // 2).clamp(0, G - K)
        sj = (qj - K // 2).clamp(0, G - K)
        return (ki >= si) & (ki < si + K) & (kj >= sj) & (kj < sj + K)
    return mod


def causal_mod(b, h, q, kv):
    return kv <= q


MASKS = {
    "dense N=16384": (None, False),
    "causal N=16384": (causal_mod, True),
    "dense N=4096 D=64": (None, False),
    "window 1024 N=16384": (window_mod(1024), None),
    "block 11% N=16384": (block_mod, None),
    "nbhd2d 128x128 k13 N=16384": (nbhd_mod(128, 13), None),
}


def decode_rows(decode):
    """SDPA (FA2, cuDNN) and FlexAttention on the decode workloads: TB/s of K+V read, per call
    (host enqueueing included, as an engine without CUDA graphs sees it) and GPU time alone."""
    lines = [
        "| decode workload (bf16, D=128, one query per sequence) | attnkit TB/s | ms | SDPA FA2 | SDPA cuDNN | FlexAttention | vs FA2 | vs cuDNN | vs Flex | unwritten/non-finite |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    gpu_lines = [
        "",
        "GPU time alone (each call queued behind a sleep kernel, so host enqueueing is hidden; what a",
        "CUDA graph or a busy stream sees). attnkit host_us: the host time of one call.",
        "",
        "| decode workload, GPU time alone | attnkit TB/s | ms | host_us | SDPA FA2 | SDPA cuDNN | FlexAttention | vs FA2 | vs cuDNN | vs Flex |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in decode:
        B, Hq, Hkv, Nk, D = r["B"], r["Hq"], r["Hkv"], r["Nk"], r["D"]
        gb = r["tbps"] * r["ms"]  # TB/s * ms = bytes / 1e9
        out, gpu = {}, {}
        if r["page"] == 0 and "sigmoid" not in r["workload"]:
            g = torch.Generator(device="cuda").manual_seed(0)
            q = torch.rand(B, Hq, 1, D, device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1
            k = torch.rand(B, Hkv, Nk, D, device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1
            v = torch.rand(B, Hkv, Nk, D, device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1
            gqa = Hq != Hkv
            for label, backend in (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                try:
                    with sdpa_kernel(backend):
                        call = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
                        out[label] = gb / timed(call)
                        gpu[label] = gb / timed(call, gpu_alone=True)
                except Exception as e:
                    print(f"{r['workload']} {label}: {e}", file=sys.stderr)
            try:
                call = lambda: flex(q, k, v, enable_gqa=gqa)
                out["flex"] = gb / timed(call)
                gpu["flex"] = gb / timed(call, gpu_alone=True)
            except Exception as e:
                print(f"{r['workload']} flex: {e}", file=sys.stderr)
            del q, k, v
            torch.cuda.empty_cache()
        f = lambda x: "-" if x is None else f"{x:.2f}"
        ratio = lambda ours, d, key: "-" if not d.get(key) else f"{ours / d[key]:.2f}"
        lines.append(f"| {r['workload']} | {r['tbps']:.2f} | {r['ms']:.3f} | {f(out.get('fa2'))} | {f(out.get('cudnn'))} | "
                     f"{f(out.get('flex'))} | {ratio(r['tbps'], out, 'fa2')} | {ratio(r['tbps'], out, 'cudnn')} | "
                     f"{ratio(r['tbps'], out, 'flex')} | {r['unwritten_or_nonfinite']} |")
        if "gpu_tbps" in r:
            t = r["gpu_tbps"]
            gpu_lines.append(f"| {r['workload']} | {t:.2f} | {r['gpu_ms']:.3f} | {r['host_us']:.1f} | {f(gpu.get('fa2'))} | "
                             f"{f(gpu.get('cudnn'))} | {f(gpu.get('flex'))} | {ratio(t, gpu, 'fa2')} | {ratio(t, gpu, 'cudnn')} | "
                             f"{ratio(t, gpu, 'flex')} |")
    return lines + gpu_lines


def main():
    lines_in = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
    ours = [r for r in lines_in if r.get("kind") != "decode"]
    decode = [r for r in lines_in if r.get("kind") == "decode"]
    by_name = {r["workload"]: r for r in ours}
    rows = []
    softmax_ref = {}
    for r in ours:
        name, B, H, N, D = r["workload"], r["B"], r["H"], r["N"], r["D"]
        useful = r["tflops"] * r["ms"]  # TFLOP/s * ms = work / 1e9
        out = {"ours": r["tflops"], "ms": r["ms"], "bad": r["unwritten_or_nonfinite"]}
        if name in MASKS:
            q, k, v = inputs(B, H, N, D)
            mod, is_causal = MASKS[name]
            if is_causal is not None:
                for label, backend in (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                    try:
                        with sdpa_kernel(backend):
                            t = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal))
                        out[label] = useful / t
                    except Exception as e:  # backend unavailable for this shape
                        out[label] = None
                        print(f"{name} {label}: {e}", file=sys.stderr)
            try:
                bm = create_block_mask(mod, None, None, N, N, device="cuda") if mod is not None else None
                t = timed(lambda: flex(q, k, v, block_mask=bm))
                out["flex"] = useful / t
            except Exception as e:
                out["flex"] = None
                print(f"{name} flex: {e}", file=sys.stderr)
            del q, k, v
            torch.cuda.empty_cache()
        rows.append((name, out))
    dense = by_name.get("dense N=16384", {}).get("tflops")
    causal = by_name.get("causal N=16384", {}).get("tflops")

    def f(x):
        return "-" if x is None else f"{x:.1f}"

    lines = [
        "| workload (bf16, D=128 unless noted) | attnkit TFLOP/s | ms | SDPA FA2 | SDPA cuDNN | FlexAttention | vs FA2 | vs cuDNN | vs Flex | unwritten/non-finite |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, o in rows:
        ratio = lambda key: "-" if o.get(key) in (None, 0) else f"{o['ours'] / o[key]:.2f}"
        lines.append(f"| {name} | {o['ours']:.1f} | {o['ms']:.3f} | {f(o.get('fa2'))} | {f(o.get('cudnn'))} | "
                     f"{f(o.get('flex'))} | {ratio('fa2')} | {ratio('cudnn')} | {ratio('flex')} | {o['bad']} |")
    lines.append("")
    lines.append(f"Same-kernel comparisons: softmax dense {f(dense)}, softmax causal {f(causal)} TFLOP/s "
                 "(sigmoid/softplus dense and linear/sigmoid causal rows above should be at least these).")
    if decode:
        lines.append("")
        lines += decode_rows(decode)
    open(sys.argv[2], "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
