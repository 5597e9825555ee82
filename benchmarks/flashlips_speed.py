"""`PYTHONPATH=. python benchmarks/flashlips_speed.py --config configs/flashlips/<name>.py[:words] [--batch 16] [--iters 5] [--torch]`

Editor throughput, frames/s, for the config's sizes with random weights (speed does not depend on them): one call =
a batch of frames through lips encoder + VAE encode (masked target and reference) + reference backbone + editor UNet
+ VAE decode, the whole program jitted; with --torch, the same model rebuilt in PyTorch from its export
(flashlips_jax.torch_model) on the same machine, in the same run. Prints one JSON line per implementation:
{"impl", "device", "image_size", "batch", "fps", "ms_per_batch"} (the median of --iters timed calls after a warm-up).
The issue's target: >= 200 FPS for the editor + VAE decode at 256 px, a clip's batch, on one H200
(configs/flashlips/paper.py).
"""
from __future__ import annotations

import json
import tempfile
import time

import numpy as np
from absl import flags

from shared import cli


def _median_time(fn, iters: int) -> float:
  fn()
  ts = []
  for _ in range(iters):
    t0 = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t0)
  return float(np.median(ts))


def measure(cfg, *, batch: int = 16, iters: int = 5, with_torch: bool = False) -> list[dict]:
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from flashlips_jax.model import FlashLips, model_config, to_unit
  import dataclasses
  c = dataclasses.replace(model_config(cfg), stage="editor")
  model = FlashLips(c)
  s, m = int(cfg.data.image_size), int(cfg.data.mouth_size)
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
  mouth = rng.integers(0, 256, (batch, m, m, 3), dtype=np.uint8)
  mask = np.zeros((batch, s, s, 1), np.float32)
  mask[:, s // 2:, s // 4: 3 * s // 4] = 1
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), to_unit(jnp.asarray(frames[:1])),
                                             to_unit(jnp.asarray(frames[:1])), jnp.asarray(mouth[:1]),
                                             jnp.asarray(mask[:1])))["params"]

  @jax.jit
  def run(p, f, r, mo, ma):
    _, x, _ = model.apply({"params": p}, to_unit(f), to_unit(r), mo, ma)
    return x
  args = [jnp.asarray(a) for a in (frames, frames, mouth, mask)]
  dt = _median_time(lambda: run(params, *args).block_until_ready(), iters)
  dev = jax.devices()[0]
  rows = [{"impl": "jax", "device": f"{dev.platform}:{dev.device_kind}", "image_size": s, "batch": batch,
           "fps": batch / dt, "ms_per_batch": 1e3 * dt}]
  if with_torch:
    import torch
    from flashlips_jax.export import write_release
    from flashlips_jax.torch_model import FlashLipsEditorTorch
    with tempfile.TemporaryDirectory() as rel:
      write_release(params, c, rel)
      ed = FlashLipsEditorTorch.from_export(rel)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    x = t(frames.astype(np.float32) / 127.5 - 1)
    tm, mo = t(mask), torch.from_numpy(mouth)

    def go():
      with torch.no_grad():
        ed.edit(x, x, mo, tm)
    dt = _median_time(go, iters)
    rows.append({"impl": "torch_export", "device": f"cpu:{torch.get_num_threads()} threads", "image_size": s,
                 "batch": batch, "fps": batch / dt, "ms_per_batch": 1e3 * dt})
  return rows


def main():
  import os
  import time as _time
  f = cli.FLAGS
  rows = measure(cli.FLAGS.config, batch=f.batch, iters=f.iters, with_torch=f.torch)
  if len(rows) == 2:       # ratio = ours / the PyTorch export's time per batch (below 1: ours is faster)
    rows.append({"summary": True, "image_size": rows[0]["image_size"], "batch": f.batch,
                 "ratio": rows[0]["ms_per_batch"] / rows[1]["ms_per_batch"]})
  stamp = _time.strftime("%Y-%m-%dT%H:%M:%S")
  for row in rows:
    line = json.dumps({**row, "when": stamp, "load": os.getloadavg()[0]})
    print(line, flush=True)
    if f.out:
      with open(f.out, "a") as fh:
        fh.write(line + "\n")


if __name__ == "__main__":
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
  flags.DEFINE_integer("batch", 16, "Frames per call.")
  flags.DEFINE_integer("iters", 5, "Timed calls.")
  flags.DEFINE_boolean("torch", False, "Also the PyTorch export.")
  flags.DEFINE_string("out", "", "Append the JSON lines here too (e.g. benchmarks/results/flashlips_speed.jsonl).")
  cli.run(main)
