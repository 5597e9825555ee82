"""What people watch, hear and read of a UniTalking model: media writers, sync / syllable scores, the
trainer's sample hook. (task.py only computes: loss and generation.)

  write_samples(out_dir, cfg, video_lat, audio_lat, names)   NAME.wav, NAME.mp4 (with audio), NAME_frames.png,
                                                             NAME_mel.png per clip
  scores(cfg, generate, params, n, seed, tasks)               {task: sync / sync_shuffled / sync_margin / ser /
                                                             ser_chance} on n held-out clips (+ "real")
  make_sample_fn(cfg, task)                                  the trainer hook: DIR/samples/<step>/ with clips,
                                                             sync.txt and sync.png
"""
from __future__ import annotations

import logging
import os

import numpy as np

from shared.errors import DataError
from unitalking_jax import data as data_lib

log = logging.getLogger(__name__)
MP4_SCALE = 4   # the tiny 32 px clips are written 4x larger


def write_samples(out_dir: str, cfg, video_lat, audio_lat, names, *, griffin_lim: bool = True) -> list[str]:
  """Writes per clip NAME.wav, NAME.mp4 (with audio), NAME_frames.png, NAME_mel.png. Returns the mp4 paths."""
  from PIL import Image
  from shared.data.media import write_mp4, write_wav
  c = data_lib.codecs(cfg)
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for i, name in enumerate(names):
    frames = c.decode_video(np.asarray(video_lat[i]))
    audio = c.decode_audio(np.asarray(audio_lat[i])) if griffin_lim else np.zeros(frames.shape[0] * 640, np.float32)
    audio = np.pad(audio, (0, max(0, frames.shape[0] * 640 - audio.shape[0])))[:frames.shape[0] * 640]
    write_wav(os.path.join(out_dir, f"{name}.wav"), audio)
    mp4 = os.path.join(out_dir, f"{name}.mp4")
    write_mp4(mp4, np.repeat(np.repeat(frames, MP4_SCALE, 1), MP4_SCALE, 2), fps=25, audio=audio)
    Image.fromarray(np.concatenate(list(frames[::2]), axis=1)).save(os.path.join(out_dir, f"{name}_frames.png"))
    lm = c.log_mel(np.asarray(audio_lat[i]))
    img = np.clip((lm - lm.min()) / max(float(np.ptp(lm)), 1e-6) * 255, 0, 255).astype(np.uint8)[:, ::-1].T
    Image.fromarray(np.repeat(np.repeat(img, 2, 0), 2, 1)).save(os.path.join(out_dir, f"{name}_mel.png"))
    paths.append(mp4)
  return paths


def eval_batch(cfg, n: int, split: str = "test") -> dict:
  """The first n clips of a split (held-out speakers for "test"), prepared as one batch."""
  src = data_lib.source(cfg, split)
  return data_lib.collate([data_lib.prepare(src[i], cfg) for i in range(n)])


def sync_of(cfg, video_lat, audio_lat, curves: bool = False):
  """Sync score (data.sync_score) of latents; curves=True -> (score, mouth openings, audio energies)."""
  c = data_lib.codecs(cfg)
  frames = [c.decode_video(np.asarray(v)) for v in video_lat]
  mels = [c.log_mel(np.asarray(a)) for a in audio_lat]
  op, en = data_lib.sync_curves(frames, mels)
  score = data_lib.sync_score_of_curves(op, en)
  return (score, op, en) if curves else score


def syllable_scores(cfg, audio_lat, refs) -> dict:
  """Template-decoder syllable error rate of generated audio vs the clips' text, and chance (next clip's text)."""
  from unitalking_jax import template_decoder as td
  c = data_lib.codecs(cfg)
  r = td.evaluate(cfg, [c.log_mel(np.asarray(x)) for x in audio_lat], refs)
  return {"ser": r["ser"], "ser_chance": r["ser_chance"]}


def scores(cfg, generate, params, n: int, *, seed: int = 0, tasks=("t2av", "ti2av", "tv2a"), split: str = "test",
           batch=None) -> dict:
  """{"real": ..., task: ...}: sync and syllable scores over n clips of `split`, generated with `seed`."""
  from unitalking_jax import template_decoder as td
  batch = batch if batch is not None else eval_batch(cfg, n, split)
  refs = td.heldout_refs(cfg, n, split)

  out = {"real": {**sync_of(cfg, batch["video"], batch["audio"]), **_ser_or_empty(cfg, batch["audio"], refs)}}
  for t in tasks:
    v, a = generate(params, batch, t, seed=seed)
    out[t] = {**sync_of(cfg, np.asarray(v), np.asarray(a)), **_ser_or_empty(cfg, a, refs)}
  return out


def _ser_or_empty(cfg, audio_lat, refs) -> dict:
  """syllable_scores, or {} (with the reason logged) when the clips are too short to hold a whole syllable."""
  try:
    return syllable_scores(cfg, audio_lat, refs)
  except DataError as e:
    log.warning("no syllable error rate: %s", e)
    return {}


def make_sample_fn(cfg, task):
  """The trainer's sample hook (variables, step, out_dir): T2AV and TV2A clips on held-out speakers, sync.txt
  (sync and syllable scores over sampling.score_clips clips, real clips first) and sync.png."""

  def sample_fn(variables, step, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    if cfg.stage.number == 1:  # the audio stream alone: joint clips come from stage 2
      return
    from unitalking_jax import template_decoder as td
    from unitalking_jax.sync_plot import sync_figure
    params = variables["params"]
    s = cfg.sampling
    n = max(s.num, int(s.get("score_clips", s.num)))   # scores over n held-out clips; media for the first s.num
    batch = eval_batch(cfg, n)
    refs = td.heldout_refs(cfg, n)

    def ser(audio):
      r = _ser_or_empty(cfg, audio, refs)
      return f"ser {r['ser']:.3f} (chance {r['ser_chance']:.3f})" if r else "ser n/a (clips too short)"

    rows, lines = [], []   # sync.png rows (label, mouth opening, audio energy); sync.txt lines

    def score(label, video_lat, audio_lat, k):
      sync, op, en = sync_of(cfg, video_lat, audio_lat, curves=True)
      lines.append(f"{label}: {sync} {ser(audio_lat)}")
      rows.extend((f"{label}_{i} r={data_lib.corr(op[i], en[i]):.2f}", op[i], en[i]) for i in range(min(k, len(op))))

    score("real", batch["video"], batch["audio"], 2)
    for t in ("t2av", "tv2a"):
      v, a = task.generate(params, batch, t, seed=step)
      write_samples(out_dir, cfg, v[:s.num], a[:s.num], [f"{t}_{i}" for i in range(s.num)])
      score(t, v, a, s.num if t == "t2av" else 2)
    with open(os.path.join(out_dir, "sync.txt"), "w") as f:
      f.write(f"{n} held-out clips\n" + "\n".join(lines) + "\n")
    sync_figure(rows).save(os.path.join(out_dir, "sync.png"))

  return sample_fn
