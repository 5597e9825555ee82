"""`python -m flashlips_jax.infer --workdir W --video face.mp4 --audio speech.wav --out synced.mp4 [--pose P]
[--batch 16] [--seed 0] [--step S]`

Lip-sync: a face video and new speech in, the video with its mouth re-rendered to the speech out (mp4 with the new
audio). W is a pose-stage workdir (it holds the pose Transformer and the frozen editor it was trained with: masked
or mask-free).

  1. the face crop, mouth box and mouth crops of every frame from the clip's keypoints (--pose P: a .npy [T, 20, 3]
     of SynthCue keypoints in frame units; default <stem>_pose.npy beside the video) or, for a real video, from
     its 68-point face landmarks (--landmarks L: [T, 68, 2] pixels, iBUG order, as face_alignment / auto_avsr
     preprocessing writes them; default <stem>_landmarks.npy): the face size from the eye distance, the mouth box
     from the lips' extent over the clip (no detector runs here: landmarks come from the user's own);
  2. the output has as many frames as the speech lasts (25 fps); a shorter video is played back and forth, a
     longer one is cut;
  3. lips vectors from the speech: the pose Transformer in windows of data.frames frames (sampling.steps Euler
     steps; reference pose = the lips vector of the video's first frame);
  4. the one-step editor streams the frames in batches of --batch: reference = the first frame, the masked editor
     reads the masked frame (its output pasted inside the mouth box), the mask-free editor the whole frame; each
     edited crop is pasted back into the full frame inside the mouth box.
Prints one JSON line: {"out", "frames", "editor_fps" (editor + VAE encode / decode, after the first compiled batch),
"total_fps" (whole pipeline, compile included), "masked"}.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import flags

from shared import cli


def read_pose(video: str, pose: str | None, n_frames: int, landmarks: str | None = None,
              frame_hw: tuple[int, int] | None = None) -> tuple[np.ndarray, float | None]:
  """-> (keypoints [T, 20, 3] in frame units, pixels per face unit or None for SynthCue's). SynthCue keypoints
  (--pose, default <stem>_pose.npy) or 68-point landmarks of a real video (--landmarks, default
  <stem>_landmarks.npy: [T, 68, 2|3] pixels, iBUG convention)."""
  from shared.errors import DataError
  from flashlips_jax.data import pose_from_landmarks68
  stem = video[:-4] if video.endswith(".mp4") else video
  if landmarks is None and pose is None and not os.path.isfile(f"{stem}_pose.npy") \
      and os.path.isfile(f"{stem}_landmarks.npy"):
    landmarks = f"{stem}_landmarks.npy"
  if landmarks is not None:
    if not os.path.isfile(landmarks):
      raise DataError("no such landmarks file", path=landmarks, key="landmarks")
    lm = np.load(landmarks, allow_pickle=False)
    if lm.ndim != 3 or lm.shape[0] != n_frames:
      raise DataError(f"landmarks have shape {lm.shape}; expected [T={n_frames}, 68, 2]", path=landmarks,
                      key="landmarks")
    return pose_from_landmarks68(lm, *frame_hw, path=landmarks)
  path = pose or f"{stem}_pose.npy"
  if not os.path.isfile(path):
    raise DataError("no keypoints for the video: give --pose (SynthCue keypoints .npy [T, 20, 3]) or --landmarks "
                    "(68-point face landmarks .npy [T, 68, 2], pixels), or put <stem>_pose.npy / "
                    "<stem>_landmarks.npy beside it", path=video, key="pose")
  x = np.load(path, allow_pickle=False)
  if x.ndim != 3 or x.shape[0] != n_frames or x.shape[2] != 3:
    raise DataError(f"pose has shape {x.shape}; expected [T={n_frames}, 20, 3]", path=path, key="pose")
  return x.astype(np.float32), None


def loop_frames(n_in: int, n_out: int) -> np.ndarray:
  """Frame indices [n_out] playing n_in frames back and forth (0 1 .. n-1 n-2 .. 1 0 1 ..)."""
  if n_in == 1:
    return np.zeros(n_out, int)
  period = np.concatenate([np.arange(n_in), np.arange(n_in - 2, 0, -1)])
  return period[np.arange(n_out) % len(period)]


def paste(frame: np.ndarray, crop: np.ndarray, g, size: int) -> np.ndarray:
  """Pastes an edited face crop [S, S, 3] back into the full frame inside the mouth box (frame pixels)."""
  from PIL import Image
  x0, y0, side = g.face
  s = side / size                                                  # frame pixels per crop pixel
  by0, by1, bx0, bx1 = (int(v) for v in g.box)
  fx0, fy0 = int(np.floor(x0 + bx0 * s)), int(np.floor(y0 + by0 * s))
  fx1, fy1 = int(np.ceil(x0 + bx1 * s)), int(np.ceil(y0 + by1 * s))
  h, w = frame.shape[:2]
  fx0, fy0, fx1, fy1 = max(fx0, 0), max(fy0, 0), min(fx1, w), min(fy1, h)
  if fx1 <= fx0 or fy1 <= fy0:
    return frame
  # the crop pixels that cover [fx0, fx1) x [fy0, fy1)
  box = ((fx0 - x0) / s, (fy0 - y0) / s, (fx1 - x0) / s, (fy1 - y0) / s)
  patch = np.asarray(Image.fromarray(crop).resize((fx1 - fx0, fy1 - fy0), Image.BILINEAR, box=box))
  out = frame.copy()
  out[fy0:fy1, fx0:fx1] = patch
  return out


def infer(workdir: str, video: str, audio: str, out: str, *, pose: str | None = None, batch: int = 16,
          seed: int = 0, step: int | None = None, landmarks: str | None = None) -> dict:
  from shared.checkpoint import restore
  from shared.data.media import read_mp4, read_wav, write_mp4
  from shared.errors import ConfigError
  from flashlips_jax import data as data_lib
  from flashlips_jax.task import make_task
  m = read_mp4(video, with_audio=False)
  kp, unit = read_pose(video, pose, m.frames.shape[0], landmarks, m.frames.shape[1:3])
  wav, _ = read_wav(audio, sample_rate=16000)
  r = restore(workdir, step)
  cfg = r.config
  if cfg.model.stage != "pose":
    raise ConfigError(f"--workdir {workdir}: a pose-stage workdir is needed (this one is stage "
                      f"{cfg.model.stage!r}: it has no audio-to-lips-pose model)")
  cfg.objective.require_vae_init = cfg.objective.require_editor_init = False
  task = make_task(cfg)
  gen, variables = task.generator, {"params": r.params, **r.model_state}
  t0 = time.perf_counter()
  fps = int(cfg.data.fps)
  n_out = max(1, int(np.ceil(len(wav) * fps / 16000)))
  frames = m.frames
  h, w = frames.shape[1:3]
  g = data_lib.Geometry(kp, h, w, cfg.data, data_lib.latent_stride(cfg), unit=unit)
  crops = data_lib.face_crops(frames, g)
  idx = loop_frames(len(frames), n_out)
  # lips vectors in windows of F frames
  f = int(cfg.data.frames)
  nw = -(-n_out // f)
  feats = data_lib.speech_features(wav, nw * f, cfg.data).reshape(nw, f, -1)
  mask = (np.arange(nw * f) < n_out).reshape(nw, f)
  ref = np.asarray(gen.encode_lips(variables, data_lib.mouth_crops(crops[:1], g)))
  lips = np.asarray(gen.lips(variables, feats, np.repeat(ref, nw, 0), mask, seed=seed)).reshape(nw * f, -1)[:n_out]
  # the editor, streamed
  size = int(cfg.data.image_size)
  reference = np.repeat(crops[:1], batch, 0)
  boxes = np.repeat(g.box[None], batch, 0)
  edited = np.empty((n_out,) + crops.shape[1:], np.uint8)
  t_edit, n_timed = 0.0, 0
  for start in range(0, n_out, batch):
    k = min(batch, n_out - start)
    chunk = crops[idx[start:start + k]]
    lv = lips[start:start + k]
    if k < batch:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - k, 0)])
      lv = np.concatenate([lv, np.repeat(lv[-1:], batch - k, 0)])
    t1 = time.perf_counter()
    y = np.asarray(gen.render(variables, chunk, reference, lv, boxes))
    if start:                                                      # the first batch compiles
      t_edit += time.perf_counter() - t1
      n_timed += batch
    edited[start:start + k] = y[:k]
  result = np.stack([paste(frames[idx[i]], edited[i], g, size) for i in range(n_out)])
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  write_mp4(out, result, fps=fps, audio=wav[:n_out * 16000 // fps], sample_rate=16000)
  total = time.perf_counter() - t0
  return {"out": out, "frames": int(n_out), "editor_fps": float(n_timed / t_edit) if t_edit > 0 else None,
          "total_fps": float(n_out / total), "masked": bool(cfg.model.masked)}


def main():
  f = cli.FLAGS
  print(json.dumps(infer(f.workdir, f.video, f.audio, f.out, pose=f.pose, batch=f.batch, seed=f.seed, step=f.step,
                         landmarks=f.landmarks)), flush=True)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A pose-stage training workdir.")
  flags.DEFINE_string("video", None, "Face video (mp4).")
  flags.DEFINE_string("audio", None, "New speech (wav / flac; resampled to 16 kHz).")
  flags.DEFINE_string("out", None, "Output mp4.")
  flags.DEFINE_string("pose", None, "Keypoints .npy [T, 20, 3] (default: <stem>_pose.npy beside the video).")
  flags.DEFINE_string("landmarks", None, "A real video's 68-point face landmarks .npy [T, 68, 2] in pixels (iBUG "
                      "convention; default: <stem>_landmarks.npy beside the video when there is no <stem>_pose.npy).")
  flags.DEFINE_integer("batch", 16, "Editor batch (frames per call).")
  flags.DEFINE_integer("seed", 0, "Noise seed of the lips-pose sampler.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.mark_flags_as_required(["workdir", "video", "audio", "out"])
  cli.run(main)
