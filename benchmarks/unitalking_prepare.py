"""UniTalking latent preparation throughput and training from latents vs on the fly (JSON lines, same CPU, same run).

    python benchmarks/unitalking_prepare.py                       # tiny config, 64 clips, 50 training steps
    python benchmarks/unitalking_prepare.py --clips 32 --steps 20 --frames 8
    python benchmarks/unitalking_prepare.py --config tiny:vae_codecs --frames 33 \
        --video_codec_path V --audio_codec_path A           # the trained tiny Wan / mel VAEs (train_codec workdirs)

Line "prepare" (one per layout): clips/s of `python -m unitalking_jax.prepare`'s loop (one process) on the
config's codecs (tiny: PCA video codec on 8x space-to-depth, PCA audio codec on the AudioLDM log-mel, pinyin ids;
tiny:vae_codecs: the Wan2.2-style video VAE on whole 32 px frames and the MMAudio-style mel VAE; "codec" names them),
for layout synthcue (clips generated in memory) and lrs3 (the same clips written as mp4 + wav by layouts.write_lrs3,
decoded again); plus seconds per clip by stage: load (generate / decode + conform), video codec, audio codec,
text + reference, record serialisation. The codec fit (once per config) is timed apart ("fit_s").
Line "train": shared.train on SynthCue for --steps steps twice in this process, on the fly (data.prepare in
the grain map: generate + encode every clip) and from the prepared SynthCue latents (--config.data.latents):
median steps/s over the steps after the first 5, and whether the losses agree step for step ("losses_equal",
"max_abs_loss_diff" over all steps): the issue's "latent training == on-the-fly training" check at 50 steps.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def small(cfg, frames: int, clips: int, batch: int, steps: int):
  cfg.data.update(dict(frames=frames, num_samples=clips))
  cfg.trainer.update(dict(total_steps=steps, batch_size=batch, log_every=1, sample_every=0, eval_every=0))
  cfg.trainer.checkpoint.update(dict(every_steps=0, async_save=False))
  return cfg


def bench_prepare(cfg, layout: str, root: str, out: str) -> dict:
  from unitalking_jax import data as data_lib
  from unitalking_jax import latents as lat
  from unitalking_jax import prepare as prep
  t0 = time.perf_counter()
  res = prep.prepare(cfg, layout, root, out, clips_per_shard=16, progress=lambda line: None)
  dt = time.perf_counter() - t0
  clips = prep.Clips(cfg, layout, root, "train")
  c = data_lib.codecs(cfg)
  n = min(len(clips), 16)
  stages = dict(load=0.0, video=0.0, audio=0.0, text_ref=0.0, record=0.0)
  t = cfg.data.frames
  for i in range(n):
    t1 = time.perf_counter()
    s = clips.load(i)
    t2 = time.perf_counter()
    c.encode_video(data_lib.clip_video(s, cfg))
    t3 = time.perf_counter()
    c.encode_audio(s["audio"][:t * 640], t * data_lib.MEL_PER_FRAME)
    t4 = time.perf_counter()
    ex = data_lib.prepare(s, cfg, 0)   # (the whole encode again: text + ref = its remainder)
    t5 = time.perf_counter()
    lat.encode_record(ex, clips.names[i], i)
    t6 = time.perf_counter()
    stages["load"] += t2 - t1
    stages["video"] += t3 - t2
    stages["audio"] += t4 - t3
    stages["text_ref"] += max((t5 - t4) - (t4 - t2), 0.0)
    stages["record"] += t6 - t5
  idx = res["index"]
  codec = f"{cfg.data.video_codec} / {cfg.data.audio_codec}"
  return {"bench": "unitalking_prepare", "what": "prepare", "layout": layout, "codec": codec,
          "video_latent": idx["shapes"]["video"]["shape"], "audio_latent": idx["shapes"]["audio"]["shape"],
          "clips": idx["clips"], "records": idx["records"], "seconds": round(dt, 2),
          "clips_per_s": round(idx["clips"] / dt, 2),
          "s_per_clip": {k: round(v / n, 4) for k, v in stages.items()},
          "mb_per_clip": round(sum(s["bytes"] for s in idx["shards"]) / max(idx["records"], 1) / 2 ** 20, 4),
          "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}


def bench_train(cfg_fn, latents: str, workdir: str) -> dict:
  import jax

  from shared import mesh as mesh_lib
  from shared import train as train_lib
  from unitalking_jax.task import make_task
  out = {}
  for name in ("on_the_fly", "latents"):
    cfg = cfg_fn()
    if name == "latents":
      cfg.data.latents = latents
    mesh = mesh_lib.make_mesh(cfg.trainer.mesh, devices=jax.devices()[:1])
    d = os.path.join(workdir, name)
    t0 = time.perf_counter()
    train_lib.train(cfg, make_task(cfg), d, mesh=mesh)
    rows = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
    rows = [r for r in rows if "loss" in r]
    out[name] = dict(wall_s=time.perf_counter() - t0, losses=[r["loss"] for r in rows],
                     sps=statistics.median(r["steps_per_s"] for r in rows[5:]) if len(rows) > 5 else float("nan"))
  a, b = out["on_the_fly"]["losses"], out["latents"]["losses"]
  return {"bench": "unitalking_prepare", "what": "train", "codec": f"{cfg.data.video_codec} / {cfg.data.audio_codec}",
          "steps": len(a), "batch": cfg.trainer.batch_size,
          "frames": cfg.data.frames, "steps_per_s_on_the_fly": round(out["on_the_fly"]["sps"], 3),
          "steps_per_s_latents": round(out["latents"]["sps"], 3),
          "speedup": round(out["latents"]["sps"] / out["on_the_fly"]["sps"], 2),
          "wall_s_on_the_fly": round(out["on_the_fly"]["wall_s"], 1),
          "wall_s_latents": round(out["latents"]["wall_s"], 1),
          "losses_equal": a == b and len(a) == len(b),
          "max_abs_loss_diff": max((abs(x - y) for x, y in zip(a, b)), default=float("nan")),
          "loss_first": a[0] if a else None, "loss_last": a[-1] if a else None,
          "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="tiny", help="configs/unitalking/<name>.py[:arg]")
  p.add_argument("--video_codec_path", default="", help="data.video_codec_path (the VAE codec configs)")
  p.add_argument("--audio_codec_path", default="", help="data.audio_codec_path")
  p.add_argument("--clips", type=int, default=64, help="SynthCue clips prepared (and trained on)")
  p.add_argument("--frames", type=int, default=32)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--steps", type=int, default=50)
  p.add_argument("--skip_train", action="store_true")
  args = p.parse_args()
  import importlib

  from shared.data import layouts
  from unitalking_jax import data as data_lib
  name, _, arg = args.config.partition(":")
  mod = importlib.import_module(f"configs.unitalking.{name}")

  def cfg_fn():
    cfg = mod.get_config(arg)
    for key in ("video_codec_path", "audio_codec_path"):
      if getattr(args, key):
        cfg.data[key] = getattr(args, key)
    return small(cfg, args.frames, args.clips, args.batch, args.steps)
  cfg = cfg_fn()
  tmp = tempfile.mkdtemp(prefix="unitalking_prepare_")
  t0 = time.perf_counter()
  data_lib.codecs(cfg)
  fit_s = time.perf_counter() - t0
  rows = []
  root = os.path.join(tmp, "lrs3")
  src = data_lib.source(cfg, "train")
  layouts.write_lrs3(root, "train", (src[i] for i in range(args.clips)))
  for layout in ("synthcue", "lrs3"):
    row = bench_prepare(cfg, layout, root, os.path.join(tmp, f"latents_{layout}"))
    row["fit_s"] = round(fit_s, 2)
    rows.append(row)
    print(json.dumps(row), flush=True)
  if not args.skip_train:
    row = bench_train(cfg_fn, os.path.join(tmp, "latents_synthcue"), os.path.join(tmp, "train"))
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
