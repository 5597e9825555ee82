"""Attention benchmark: time and TFLOP/s per implementation, JSON lines on stdout.

  python -m benchmarks.attention                      # full sweep on GPU/TPU; a reduced one on CPU
  python -m benchmarks.attention --lengths 4096,8192,16384 --head-dims 128 --masks none,causal,tv2a

Sweep: lengths 1k-32k, head_dim 64/128, masks none / causal / tv2a (video = first half, audio = second
half) / prefix (prefix_causal, prefix = L/4), forward and forward+backward, against "xla" and "cudnn"
(and "splash" on TPU). FLOPs count only the visible fraction of the mask (4·B·H·Lq·Lk·D·frac forward,
×3.5 for forward+backward), so skipped tiles are not counted as work. A "matmul" line gives the
device's measured dense bf16 matmul rate for scale. On CPU the Pallas kernel runs in interpret mode:
those timings mean nothing about the kernel (the sweep only checks that everything runs).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from shared.kernels import block_mask as bm
from shared.kernels import dispatch
from shared.kernels.flash_attention import flops


def _time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile + warm up
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t)
  return float(np.median(ts))


def _mask(kind: str, length: int):
  """(block_mask or None, causal, visible fraction)."""
  if kind == "none":
    return None, False, 1.0
  if kind == "causal":
    return None, True, (length + 1) / (2 * length)
  m = bm.tv2a(length // 2, length - length // 2) if kind == "tv2a" else bm.prefix_causal(length // 4, length)
  rows = 1024
  visible = sum(int(m.dense_rows(i, min(i + rows, length)).sum()) for i in range(0, length, rows))
  return m, False, visible / length ** 2


def matmul_rate(dtype, repeats: int, n: int, random: bool = False) -> dict:
  """Dense n x n x n matmul rate. random=False multiplies ones (this CLI's line); random=True normal values
  (low-entropy operands draw less power, so ones/zeros can read ~10 % above what real data gets)."""
  a = (jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype) if random
       else jnp.ones((n, n), dtype))
  t = _time(jax.jit(lambda a: a @ a), a, repeats=repeats)
  row = dict(bench="matmul", n=n, dtype=jnp.dtype(dtype).name, ms=t * 1e3, tflops=2 * n ** 3 / t / 1e12)
  return dict(row, data="random") if random else row


def passes(impl: str, *, causal: bool, block_mask, backward: bool = True) -> list:
  """[(pass name, jitted fn(q, k, v), FLOP multiplier of the forward)]: "fwd" and, unless backward=False,
  "fwd_bwd" (the gradient in q, k, v of sum(out): 3.5x the forward's matmul FLOPs). Shared with gpu_suite."""
  fwd = jax.jit(lambda q, k, v: dispatch.run(
      impl, q, k, v, bias=None, mask=None, segment_ids=None, causal=causal, scale=None, causal_offset=0,
      block_mask=block_mask))
  out = [("fwd", fwd, 1.0)]
  if backward:
    out.append(("fwd_bwd", jax.jit(jax.grad(lambda q, k, v: fwd(q, k, v).astype(jnp.float32).sum(), (0, 1, 2))),
                3.5))
  return out


def main(argv=None):
  cpu = jax.default_backend() == "cpu"
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--impls", default="xla,pallas" if cpu else
                 ("xla,cudnn,pallas" if jax.default_backend() == "gpu" else "xla,splash"))
  p.add_argument("--lengths", default="256" if cpu else "1024,2048,4096,8192,16384,32768")
  p.add_argument("--head-dims", default="64" if cpu else "64,128")
  p.add_argument("--masks", default="none,tv2a" if cpu else "none,causal,tv2a,prefix")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--heads", type=int, default=2 if cpu else 16)
  p.add_argument("--kv-heads", type=int, default=0, help="0 = same as --heads")
  p.add_argument("--dtype", default="float32" if cpu else "bfloat16")
  p.add_argument("--repeats", type=int, default=2 if cpu else 10)
  p.add_argument("--no-backward", action="store_true")
  args = p.parse_args(argv)
  dtype = jnp.dtype(args.dtype)
  info = dict(backend=jax.default_backend(), device=jax.devices()[0].device_kind, date=time.strftime("%Y-%m-%d"))
  if cpu:
    print(json.dumps(dict(note="CPU: Pallas runs in interpret mode; these timings mean nothing about the "
                               "kernels (run on a GPU/TPU for real numbers)", **info)), flush=True)
  print(json.dumps(dict(**matmul_rate(dtype, args.repeats, 1024 if cpu else 8192), **info)), flush=True)
  hkv = args.kv_heads or args.heads
  for length in map(int, args.lengths.split(",")):
    for d in map(int, args.head_dims.split(",")):
      ks = jax.random.split(jax.random.PRNGKey(0), 3)
      q = jax.random.normal(ks[0], (args.batch, length, args.heads, d), jnp.float32).astype(dtype)
      k = jax.random.normal(ks[1], (args.batch, length, hkv, d), jnp.float32).astype(dtype)
      v = jax.random.normal(ks[2], (args.batch, length, hkv, d), jnp.float32).astype(dtype)
      for kind in args.masks.split(","):
        block_mask, causal, frac = _mask(kind, length)
        call = dispatch.describe(q, k, bias=None, mask=None, segment_ids=None, causal=causal, causal_offset=0,
                                 block_mask=block_mask)
        for impl in args.impls.split(","):
          row = dict(bench="attention", impl=impl, length=length, head_dim=d, heads=args.heads, kv_heads=hkv,
                     batch=args.batch, mask=kind, dtype=dtype.name, visible=round(frac, 4), **info)
          why = dispatch.refusal(impl, call, explicit=True)
          if why is not None:
            print(json.dumps(dict(row, skipped=why)), flush=True)
            continue
          for name, fn, mult in passes(impl, causal=causal, block_mask=block_mask, backward=not args.no_backward):
            try:
              t = _time(fn, q, k, v, repeats=args.repeats)
              work = flops(args.batch, args.heads, length, length, d, density=frac) * mult
              print(json.dumps(dict(row, **{"pass": name, "ms": round(t * 1e3, 3),
                                            "tflops": round(work / t / 1e12, 3)})), flush=True)
            except Exception as e:  # noqa: BLE001 -- a failing config is a result, not a crash
              print(json.dumps(dict(row, **{"pass": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})),
                    flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
