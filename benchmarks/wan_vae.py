"""Wan VAE decode speed: ours (JAX, jitted) vs diffusers' AutoencoderKLWan (PyTorch), same machine, same run.

  python benchmarks/wan_vae.py --preset wan22 --latent-frames 3 --size 64
  python benchmarks/wan_vae.py --preset tiny   # seconds, for a smoke run

Both decode the same random latents with the same (random) weights, imported from the diffusers
model. Prints one JSON line per measured implementation: output frames per second, the ratio to
diffusers (> 1: ours faster), the max abs difference to diffusers' output, and compile time.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time

import numpy as np


def _presets():
  from shared.models import wan_vae as W
  tiny = dict(base_dim=16, decoder_base_dim=24, z_dim=8, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
              is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
              latents_mean=[0.0] * 8, latents_std=[1.0] * 8)
  from shared.weights.wan_vae_family import config_to_diffusers
  strip = lambda d: {k: v for k, v in d.items() if k[0] != "_"}
  return {"tiny": tiny, "wan21": strip(config_to_diffusers(W.wan21_config())),
          "wan22": strip(config_to_diffusers(W.wan22_config()))}


def _time(fn, repeats):
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--preset", default="wan22", choices=["tiny", "wan21", "wan22"])
  ap.add_argument("--latent-frames", type=int, default=3, help="latent frames t (video frames 1 + 4(t-1))")
  ap.add_argument("--size", type=int, default=64, help="output height = width in pixels")
  ap.add_argument("--repeats", type=int, default=2)
  ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
  args = ap.parse_args()

  import jax
  import jax.numpy as jnp
  import torch
  from diffusers import AutoencoderKLWan as TorchWan

  from shared.models import wan_vae as W
  from shared.weights import wan_vae_family as F

  if args.threads:
    torch.set_num_threads(args.threads)
  kwargs = _presets()[args.preset]
  torch.manual_seed(0)
  theirs = TorchWan(**kwargs).eval()
  config = F.config_from_diffusers(dict(theirs.config))
  model = W.AutoencoderKLWan(config)
  params = F.import_wan_vae(theirs.state_dict(), config)
  s = args.size // config.spatial_stride
  if s < 1 or args.size % config.spatial_stride:
    raise SystemExit(f"--size must be a multiple of the spatial stride {config.spatial_stride}")
  z = np.random.default_rng(0).normal(size=(1, config.z_dim, args.latent_frames, s, s)).astype(np.float32)
  frames = 1 + config.temporal_stride * (args.latent_frames - 1)
  base = dict(bench="wan_vae_decode", preset=args.preset, frames=frames, size=args.size,
              backend=jax.default_backend(), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads())

  zt = torch.from_numpy(z)
  with torch.no_grad():
    t0 = time.perf_counter()
    ref = theirs.decode(zt).sample.numpy()
    first = time.perf_counter() - t0
    t_theirs = _time(lambda: theirs.decode(zt), args.repeats)
  fps_theirs = frames / t_theirs
  print(json.dumps(base | dict(impl="diffusers", fps=round(fps_theirs, 4), seconds=round(t_theirs, 4),
                               first_call_s=round(first, 3))), flush=True)

  zj = jnp.asarray(z.transpose(0, 2, 3, 4, 1))
  for name, chunk in (("ours_chunked", 1), ("ours_whole", None)):
    fn = jax.jit(functools.partial(W.decode, model, chunk=chunk))
    t0 = time.perf_counter()
    out = np.asarray(fn(params, zj).block_until_ready())
    compile_s = time.perf_counter() - t0
    t_ours = _time(lambda: fn(params, zj).block_until_ready(), args.repeats)
    diff = float(np.max(np.abs(out.transpose(0, 4, 1, 2, 3) - ref)))
    print(json.dumps(base | dict(impl=name, chunk=chunk, fps=round(frames / t_ours, 4), seconds=round(t_ours, 4),
                                 ratio_vs_diffusers=round(t_theirs / t_ours, 3), max_abs_diff=diff,
                                 compile_s=round(compile_s, 2))), flush=True)


if __name__ == "__main__":
  main()
