"""Does a video codec keep the mouth? Sync of real held-out SynthCue clips on their raw frames vs after the codec's
round trip (encode -> decode), with the same audio (the config's audio codec's log-mel), plus round-trip PSNR.

    PYTHONPATH=. python benchmarks/unitalking_codec_sync.py --config tiny:vae_codecs \
        --audio_codec_path A --video_codec_path V [--video_codec_path V2 ...] [--n 64]
    PYTHONPATH=. python benchmarks/unitalking_codec_sync.py --config tiny            # the PCA codecs

One JSON line per video codec: "raw" and "round_trip" = unitalking_jax.data.sync_score (mean per-clip correlation
of audio energy with the mouth-opening proxy; shuffled pairs; margin), "psnr_db" of the decoded clips. The
round trip's margin is the ceiling of any sync a UniTalking model can show through that codec. A Wan-style VAE's
latent channels are read from its config (data.video_pca follows them).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def score(cfg, n: int) -> dict:
  import numpy as np

  from unitalking_jax import data as data_lib
  c = data_lib.codecs(cfg)
  src = data_lib.source(cfg, "test")
  raw, trip, mels, psnr = [], [], [], []
  for i in range(n):
    s = src[i]
    ex = data_lib.prepare(s, cfg)
    f = np.asarray(data_lib.clip_video(s, cfg))
    g = c.decode_video(np.asarray(ex["video"]))[:len(f)]
    raw.append(f)
    trip.append(g)
    mels.append(c.log_mel(np.asarray(ex["audio"])))
    mse = np.mean((f.astype(np.float64) - g.astype(np.float64)) ** 2)
    psnr.append(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))
  t = min(min(len(m) // data_lib.MEL_PER_FRAME for m in mels), min(len(f) for f in raw))
  cut = lambda xs, k: [x[:k] for x in xs]  # noqa: E731
  return {"clips": n, "frames": list(raw[0].shape), "psnr_db": round(float(np.mean(psnr)), 2),
          "raw": data_lib.sync_score(cut(raw, t), cut(mels, data_lib.MEL_PER_FRAME * t)),
          "round_trip": data_lib.sync_score(cut(trip, t), cut(mels, data_lib.MEL_PER_FRAME * t))}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="tiny:vae_codecs", help="configs/unitalking/<name>.py[:arg]")
  p.add_argument("--video_codec_path", action="append", default=[], help="a train_codec :video workdir (repeat)")
  p.add_argument("--audio_codec_path", default="")
  p.add_argument("--n", type=int, default=64, help="held-out clips")
  a = p.parse_args()
  name, _, arg = a.config.partition(":")
  mod = importlib.import_module(f"configs.unitalking.{name}")
  for vpath in a.video_codec_path or [""]:
    cfg = mod.get_config(arg)
    if vpath:
      from unitalking_jax import data as data_lib
      cfg.data.update(dict(video_codec_path=vpath, audio_codec_path=a.audio_codec_path))
      vdir, _ = data_lib.vae_codec_dirs(cfg)
      with open(os.path.join(vdir, "config.json")) as f:
        cfg.data.video_pca = int(json.load(f)["z_dim"])
    print(json.dumps({"bench": "unitalking_codec_sync", "config": a.config, "video_codec": vpath or "pca",
                      **score(cfg, a.n)}), flush=True)


if __name__ == "__main__":
  main()
