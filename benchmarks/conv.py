"""Temporal-convolution benchmark (SANM FSMN memory: depthwise conv1d + residual), JSON lines on stdout.

  python -m benchmarks.conv                        # full sweep on GPU; a reduced one on CPU
  python -m benchmarks.conv --lengths 4096,16384 --channels 512 --kernel 11

Compares the Pallas kernel ("pallas") with jax.lax.conv_general_dilated ("xla"; on GPU XLA hands this
grouped convolution to cuDNN, so it is also the cuDNN baseline), forward and forward+backward. The op
is memory-bound: besides TFLOP/s (2·B·T·C·K per pass) each line gives the effective bandwidth of the
minimum traffic (read x, write y; ×3 for forward+backward). On CPU the Pallas kernel runs in interpret
mode: those timings mean nothing about the kernel.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from shared.kernels import temporal_conv as tc


def _time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t)
  return float(np.median(ts))


def passes(impl: str, *, left: int) -> list:
  """[(pass name, jitted fn(x, w), multiplier)]: "fwd" and "fwd_bwd" (gradients in x and w: 3x the forward's
  FLOPs and minimum traffic). Shared with gpu_suite."""
  fwd = jax.jit(lambda x, w: tc.temporal_conv(x, w, left=left, implementation=impl))
  grad = jax.jit(jax.grad(lambda x, w: fwd(x, w).astype(jnp.float32).sum(), (0, 1)))
  return [("fwd", fwd, 1), ("fwd_bwd", grad, 3)]


def figures(batch: int, length: int, channels: int, kernel: int, itemsize: int, mult: int, sec: float) -> dict:
  """ms, TFLOP/s (2·B·T·C·K per pass) and GB/s of the minimum traffic (read x, write y) for one timing."""
  work = 2.0 * batch * length * channels * kernel * mult
  traffic = 2.0 * batch * length * channels * itemsize * mult
  return {"ms": round(sec * 1e3, 3), "tflops": round(work / sec / 1e12, 4), "gbps": round(traffic / sec / 1e9, 2)}


def main(argv=None):
  cpu = jax.default_backend() == "cpu"
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--impls", default="xla,pallas")
  p.add_argument("--lengths", default="512" if cpu else "1024,2048,4096,8192,16384,32768")
  p.add_argument("--channels", default="128" if cpu else "512,1024")
  p.add_argument("--kernel", type=int, default=11)
  p.add_argument("--padding", default="centred", choices=("centred", "causal"))
  p.add_argument("--batch", type=int, default=1 if cpu else 8)
  p.add_argument("--dtype", default="float32" if cpu else "bfloat16")
  p.add_argument("--repeats", type=int, default=2 if cpu else 20)
  args = p.parse_args(argv)
  dtype = jnp.dtype(args.dtype)
  k = args.kernel
  left = k - 1 if args.padding == "causal" else (k - 1) // 2
  info = dict(backend=jax.default_backend(), device=jax.devices()[0].device_kind, date=time.strftime("%Y-%m-%d"))
  if cpu:
    print(json.dumps(dict(note="CPU: Pallas runs in interpret mode; these timings mean nothing about the "
                               "kernel (run on a GPU for real numbers)", **info)), flush=True)
  for t in map(int, args.lengths.split(",")):
    for c in map(int, args.channels.split(",")):
      x = jax.random.normal(jax.random.PRNGKey(0), (args.batch, t, c), jnp.float32).astype(dtype)
      w = (jax.random.normal(jax.random.PRNGKey(1), (k, c), jnp.float32) * 0.1).astype(dtype)
      for impl in args.impls.split(","):
        row = dict(bench="temporal_conv", impl=impl, length=t, channels=c, kernel=k, padding=args.padding,
                   batch=args.batch, dtype=dtype.name, **info)
        for name, fn, mult in passes(impl, left=left):
          try:
            sec = _time(fn, x, w, repeats=args.repeats)
            print(json.dumps(dict(row, **{"pass": name},
                                  **figures(args.batch, t, c, k, dtype.itemsize, mult, sec))), flush=True)
          except Exception as e:  # noqa: BLE001 -- a failing config is a result, not a crash
            print(json.dumps(dict(row, **{"pass": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})),
                  flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
