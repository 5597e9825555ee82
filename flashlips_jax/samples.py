"""What people look at (the trainer's sample hook, every trainer.sample_every steps, into DIR/samples/<step>/):

  editor / maskfree  edits.png: per held-out pair, one row: target | the editor's input (masked target, or the whole
                     frame for the mask-free editor) | reconstruction (its own lips vector) | edit with the next
                     row's lips vector | |edit - reconstruction| x 4 (grey: where
                     the lips vector changes the render; it should be the mouth only); 4x nearest upscaled
  pose               resync_<i>.mp4: held-out clip i's face re-rendered to clip i+1's speech (with that audio), the
                     input beside the edit; strip_<i>.png: every 2nd frame, input over edit; sync.txt: per clip,
                     the sync of the edited mouth with the new / the original speech (flashlips_jax.evaluate)
"""
from __future__ import annotations

import os

import numpy as np

from flashlips_jax import evaluate as ev


def _up(img: np.ndarray, k: int = 4) -> np.ndarray:
  return np.repeat(np.repeat(img, k, axis=-3), k, axis=-2)


def editor_samples(task, variables, cfg, out_dir: str, n: int = 8) -> str:
  from PIL import Image
  from flashlips_jax import data as data_lib
  gen = task.generator
  batch, k = next(data_lib.eval_pairs(cfg, cfg.data.eval_split, n, int(cfg.data.eval_batch_size)))
  x, xr, mouth, box = batch["target"][:, 0], batch["reference"][:, 0], batch["mouth"][:, 0], batch["box"]
  lips = np.asarray(gen.encode_lips(variables, mouth))
  rec = np.asarray(gen.render(variables, x, xr, lips, box, paste=False))
  edit = np.asarray(gen.render(variables, x, xr, np.roll(lips, 1, 0), box, paste=False))
  shown = x.copy()
  if task.model_config.masked:
    for i, (y0, y1, x0, x1) in enumerate(box):
      shown[i, y0:y1, x0:x1] = 128
  diff = np.clip(4 * np.abs(edit.astype(np.int32) - rec.astype(np.int32)).max(-1, keepdims=True), 0, 255)
  diff = np.repeat(diff, 3, -1).astype(np.uint8)                 # where the other lips vector changed the render
  rows = [np.concatenate([x[i], shown[i], rec[i], edit[i], diff[i]], 1) for i in range(k)]
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "edits.png")
  Image.fromarray(_up(np.concatenate(rows, 0))).save(path)
  return path


def pose_samples(task, variables, cfg, out_dir: str, n: int = 4) -> list[str]:
  from PIL import Image
  from shared.data.media import write_mp4
  rows = ev.resync_clips(task, variables, cfg, cfg.data.eval_split, n)
  os.makedirs(out_dir, exist_ok=True)
  paths, lines = [], []
  fps = int(cfg.data.fps)
  for i, r in enumerate(rows):
    t = r["t"]
    both = _up(np.concatenate([r["frames"], r["edited"]], 2))
    p = os.path.join(out_dir, f"resync_{i:02d}.mp4")
    write_mp4(p, both, fps=fps, audio=np.asarray(r["audio_new"], np.float32)[:t * 16000 // fps], sample_rate=16000)
    strip = np.concatenate([np.concatenate(list(r["frames"][::2]), 1), np.concatenate(list(r["edited"][::2]), 1)], 0)
    Image.fromarray(_up(strip, 2)).save(os.path.join(out_dir, f"strip_{i:02d}.png"))
    op = ev.mouth_opening(r["edited"], r["box"])
    e_new = ev.speech_energy(r["audio_new"], int(cfg.data.frames), cfg.data)[:t]
    e_orig = ev.speech_energy(r["audio_orig"], int(cfg.data.frames), cfg.data)[:t]
    lines.append(f"clip {i}: sync with the new speech {ev.corr(op, e_new):+.2f}, with the original "
                 f"{ev.corr(op, e_orig):+.2f}")
    paths.append(p)
  with open(os.path.join(out_dir, "sync.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return paths


def make_sample_fn(cfg, task):
  stage = cfg.model.stage
  if stage == "vae":
    return None

  def sample_fn(variables, step, out_dir):
    del step
    if stage == "pose":
      pose_samples(task, variables, cfg, out_dir)
    else:
      editor_samples(task, variables, cfg, out_dir)

  return sample_fn


def make_hooks(cfg, task):
  """(eval_fn, sample_fn) for the trainer: held-out metrics (flashlips_jax.evaluate) every trainer.eval_every
  steps; the samples above every trainer.sample_every steps."""
  split, n = cfg.data.eval_split, int(cfg.data.eval_samples)
  if cfg.model.stage == "pose":
    n = min(n, int(cfg.sampling.score_clips))

  def eval_fn(variables, step):
    del step
    m = ev.metrics_for(task, variables, cfg, split, n)
    return {k: v for k, v in m.items() if isinstance(v, float)}

  return eval_fn, make_sample_fn(cfg, task)
