"""`python -m trimodal_jax.infer --workdir DIR --task slt|vsr|asr|avsr [--sign F.mp4] [--lip F.mp4]
[--audio F.wav|F.mp4] [--step S]`

Decodes one clip with a trained checkpoint and prints ONE JSON line {"task", "text", "n_frames", and the input
paths given: "sign", "lip", "audio"}. The task needs (trimodal_jax.model.TASK_MODALITIES): SLT --sign and --lip
(the signer's video and the mouth crop of the same clip), VSR --lip, ASR --audio, AVSR --lip and --audio.
Files are read with shared.data.media and prepared as evaluation prepares a clip (data.prepare, rng None):
  sign   a run on precomputed sign features (data.sign_features): the clip's features F.npy [T', Ds] as
         trimodal_jax.extract writes them (shape checked against the lip clip's frames); else
         RGB mp4 at data.fps; square frames whose side is a multiple of data.sign_size are block-averaged to
         it (exactly data.sign_frames); other sizes: centre square, then PIL box (area) resize
  lip    mp4 of the mouth region at data.fps, read grey, centre-cropped to data.crop (each side >= data.crop)
  audio  16 kHz mono (wav / flac, or an mp4's audio track) -> Whisper log-mels, 4 per video frame
         (data.clip_mels); an audio-only clip has ceil(samples / 640) frames; with a video the audio is cut /
         zero-padded to the video's frames
Errors (DataError naming the file, exit 2): a missing file or one the task needs, a clip longer than the largest
frame bucket (data.frame_buckets), a sample rate other than data.sample_rate, a frame rate other than data.fps,
frames smaller than data.crop, sign and lip clips of different lengths.
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import flags

from shared import cli
from shared.errors import ConfigError, DataError


def _check_fps(fps: float, want: int, path: str):
  if not np.isfinite(fps) or abs(float(fps) - want) > 0.01:
    raise DataError(f"frame rate {fps:g} fps; the model reads data.fps={want} fps clips (resample the video)",
                    path=path)


def sign_resize(frames: np.ndarray, size: int) -> np.ndarray:
  """[T, H, W, 3] uint8 -> [T, size, size, 3] uint8: block means when square with side k * size (data.sign_frames),
  else the centre square box-resized (PIL)."""
  from trimodal_jax import data as data_lib
  t, h, w = frames.shape[:3]
  if h == w and h % size == 0:
    return data_lib.sign_frames(frames, size)
  from PIL import Image
  s = min(h, w)
  y, x = (h - s) // 2, (w - s) // 2
  sq = frames[:, y:y + s, x:x + s]
  return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BOX)) for f in sq]).astype(np.uint8)


def read_audio(path: str, sample_rate: int) -> np.ndarray:
  """wav / flac (or an mp4's audio track) -> [S] float32 at sample_rate (DataError otherwise)."""
  from shared.data import media
  if path.lower().endswith((".mp4", ".m4v", ".mov", ".mkv")):
    m = media.read_mp4(path, with_audio=True)
    if m.audio is None:
      raise DataError("the video has no audio track (--audio needs speech)", path=path)
    wav, sr = m.audio, m.sample_rate
  else:
    wav, sr = media.read_wav(path)
  if int(sr) != int(sample_rate):
    raise DataError(f"sample rate {sr} Hz; the model reads {sample_rate} Hz audio (data.sample_rate; resample "
                    "it, e.g. shared.data.media.resample)", path=path)
  return np.asarray(wav, np.float32)


def read_inputs(cfg, task: str, *, sign: str | None = None, lip: str | None = None, audio: str | None = None
                ) -> dict:
  """The files of `task` -> raw arrays {"sign" [T, H, W, 3] uint8, "lip" [T, H, W] uint8, "audio" [S] float32}."""
  from shared.data import media
  from trimodal_jax.model import TASK_MODALITIES, TASKS
  if task not in TASKS:
    raise ConfigError(f"--task {task!r}: expected one of {TASKS}")
  d = cfg.data
  given = {"sign": sign, "lip": lip, "audio": audio}
  need = TASK_MODALITIES[task]
  missing = [m for m in need if not given[m]]
  if missing:
    raise DataError(f"task {task!r} needs {' and '.join('--' + m for m in need)}; missing "
                    f"{', '.join('--' + m for m in missing)}", key=missing[0])
  out = {}
  if "sign" in need:
    from trimodal_jax import data as data_lib
    if data_lib.sign_features_dir(d):    # a run on precomputed sign features reads a feature file (extract's)
      if not str(sign).endswith(".npy"):
        raise DataError("this model reads precomputed sign features (data.sign_features): give --sign F.npy, the "
                        "clip's features [T, Ds] as python -m trimodal_jax.extract writes them", path=sign, key="sign")
      if not os.path.isfile(sign):
        raise DataError("sign feature file does not exist", path=sign, key="sign")
      x = np.load(sign, allow_pickle=False)
      out["sign"] = x if x.ndim == 2 else np.zeros((0, 0), np.float32)    # (the shape is checked in make_example)
      out["sign_file_shape"] = x.shape
    else:
      m = media.read_mp4(sign, with_audio=False)
      _check_fps(m.fps, int(d.fps), sign)
      out["sign"] = m.frames
  if "lip" in need:
    m = media.read_mp4(lip, gray=True, with_audio=False)
    _check_fps(m.fps, int(d.fps), lip)
    out["lip"] = m.frames
  if "audio" in need:
    out["audio"] = read_audio(audio, int(d.sample_rate))
  return out


def make_example(cfg, tok, task: str, arrays: dict, paths: dict | None = None) -> dict:
  """Raw arrays of one clip (read_inputs) -> the example data.prepare gives for it at evaluation (the target a
  bare eos: unused by decoding). DataError naming the file for a clip longer than the largest frame bucket."""
  from shared.data import augment
  from trimodal_jax import data as data_lib
  from trimodal_jax.model import TASK_MODALITIES, TASKS
  d = cfg.data
  paths = paths or {}
  need = TASK_MODALITIES[task]
  video = [m for m in ("lip", "sign") if m in need]
  features = "sign" in need and bool(data_lib.sign_features_dir(d))
  if video:
    t = int(arrays[video[0]].shape[0])
    if features:
      want = (data_lib.sign_steps(cfg, t), data_lib.sign_dim(cfg))
      got = tuple(arrays.get("sign_file_shape", np.shape(arrays["sign"])))
      if got != want:
        raise DataError(f"sign features have shape {got}; the {t}-frame lip clip ({paths.get('lip')}) needs "
                        f"{list(want)} (model.sign's width, one feature per frame)", path=paths.get("sign"))
    elif "sign" in need and "lip" in need and arrays["sign"].shape[0] != t:
      raise DataError(f"the sign clip has {arrays['sign'].shape[0]} frames and the lip clip ({paths.get('lip')}) "
                      f"{t}: expected the same clip", path=paths.get("sign"))
  else:
    per = int(d.sample_rate) // int(d.fps)
    t = max(1, -(-len(arrays["audio"]) // per))
  longest = int(max(d.frame_buckets))
  if t > longest:
    where = paths.get(video[0] if video else "audio")
    raise DataError(f"the clip has {t} frames ({t / float(d.fps):.2f} s), more than the largest frame bucket "
                    f"{longest} (data.frame_buckets)", path=where)
  c, size = int(d.crop), int(d.sign_size)
  ex = {"n_frames": t, "task": np.int32(TASKS.index(task)), "instr_ids": data_lib.instructions(tok)[task],
        "target_ids": np.asarray([tok.eos_token_id], np.int32)}
  if features:
    ex["sign"] = np.asarray(arrays["sign"], np.float32)
  elif "sign" in need:
    ex["sign"] = sign_resize(np.asarray(arrays["sign"], np.uint8), size)
  if "lip" in need:
    lip = np.asarray(arrays["lip"], np.uint8)
    if lip.shape[1] < c or lip.shape[2] < c:
      raise DataError(f"mouth frames are {lip.shape[1]}x{lip.shape[2]}; the model reads a {c}x{c} centre crop "
                      "(data.crop): give a larger mouth region", path=paths.get("lip"))
    ex["lip"] = np.ascontiguousarray(augment.center_crop(lip, c), np.uint8)
  if "audio" in need:
    ex["audio"] = data_lib.clip_mels(arrays["audio"], t)
  return ex


def infer(workdir: str, task: str, *, sign: str | None = None, lip: str | None = None, audio: str | None = None,
          step: int | None = None) -> dict:
  from shared.checkpoint import restore
  from trimodal_jax import data as data_lib
  from trimodal_jax.evaluate import eval_config
  paths = {k: v for k, v in (("sign", sign), ("lip", lip), ("audio", audio)) if v}
  r = restore(workdir, step)
  cfg = r.config
  arrays = read_inputs(cfg, task, **paths)      # (before building the task: a bad file fails fast)
  ex = make_example(cfg, data_lib.tokenizer(cfg), task, arrays, paths)
  from trimodal_jax.task import make_task
  task_obj = make_task(cfg)
  ecfg = eval_config(cfg, task)
  batch = data_lib.collate([ex], cfg=ecfg, tok=task_obj.tokenizer)
  text = task_obj.decoder.decode(r.variables, batch, task)[0]
  return {"task": task, "text": text, "n_frames": int(ex["n_frames"]), **paths}


def define_flags():
  flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/).")
  flags.DEFINE_enum("task", None, ["slt", "vsr", "asr", "avsr"], "What to decode.")
  flags.DEFINE_string("sign", None, "SLT: the signer's RGB video (mp4, data.fps); a run on precomputed sign "
                      "features (data.sign_features): the clip's features F.npy from trimodal_jax.extract.")
  flags.DEFINE_string("lip", None, "SLT / VSR / AVSR: the mouth-region video (mp4, data.fps).")
  flags.DEFINE_string("audio", None, "ASR / AVSR: 16 kHz speech (wav / flac, or an mp4 with an audio track).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.mark_flags_as_required(["workdir", "task"])


def main():
  f = cli.FLAGS
  row = infer(f.workdir, f.task, sign=f.sign, lip=f.lip, audio=f.audio, step=f.step)
  print(json.dumps(row, ensure_ascii=False), flush=True)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
