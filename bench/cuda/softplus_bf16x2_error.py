"""Weight error of the forward kernel's softplus (fp32 cubic, P rounded to bf16) against a
packed bf16x2 evaluation of the same weight (u = 2^-|y| and the cubic in bf16, one bf16 FMA
for u q + max(y, 0)), on 2.8M logits in base-2 units. numpy only; no GPU.

    python3 bench/cuda/softplus_bf16x2_error.py
"""
import numpy as np


def bf16(x):
    b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return (((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


a = [1.4421259, -0.7017343, 0.36646372, -0.10724979]  # forward_kernel.cuh softplus_log2_units
rng = np.random.default_rng(1)
y = np.concatenate([rng.normal(0, 3, 2_000_000), rng.uniform(-12, 0, 800_000)]).astype(np.float32)
exact = np.logaddexp(0, y.astype(np.float64) * np.log(2)) / np.log(2)
u = np.exp2(-np.abs(y)).astype(np.float32)
current = bf16(u * (((a[3] * u + a[2]) * u + a[1]) * u + a[0]) + np.maximum(y, 0))
U, R, A = bf16(u), bf16(np.maximum(y, 0)), [bf16(np.float32(c)) for c in a]
r = bf16(bf16(bf16(A[3] * U + A[2]) * U + A[1]) * U + bf16(np.float32(a[0] - 1)))  # q - 1
packed = bf16(bf16(U.astype(np.float64) * r + R).astype(np.float64) + U)
for name, w in (("current", current), ("packed bf16x2", packed)):
    e = (w - exact) / exact
    print(f"{name:14s} max {np.abs(e).max():.2e}  rms {np.sqrt((e ** 2).mean()):.2e}  bias {e.mean():+.1e}")
