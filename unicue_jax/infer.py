"""`python -m unicue_jax.infer [--csr_workdir W1] [--v2s_workdir W2] [--out DIR] [--vocoder V] [--pose P]
clip.mp4 [clip2.mp4 ...]`

Cued-speech clip(s) -> the CSR transcript (stage-1 workdir) and / or generated speech (stage-2 workdir), one JSON
line per clip: {"path", "text" (with --csr_workdir), "wav", "mel_png", "vocoder"} (with --v2s_workdir).

Inputs: a colour mp4 of the cuer (any size; the face + cue region is cropped as in training) and its pose:
  --pose P     a .npy [T, 20, 3] (SynthCue, frame units) or [T, 137, 3] (OpenPose body 25 + face 70 + left hand 21
               + right hand 21, pixels), or a directory of OpenPose --write_json files (<name>_<frame>_keypoints.json)
               (one clip only); without --pose, <stem>_pose.npy beside the clip (what the cued-speech layout and
               SynthCue's writers leave), else <stem>_openpose/ (an OpenPose JSON directory)
Clips must have at most data.frames frames (the trained length; 25 fps).
Speech: the DDIM sample is decoded by the VAE to AudioLDM's log-mel; with --vocoder V (a SpeechT5HifiGan
directory: shared.weights.load_pretrained, e.g. AudioLDM's vocoder/) it is vocoded, otherwise - no vocoder is
trained here - Griffin-Lim inverts the mel (shared.data.features.mel_to_audio; "vocoder": "griffin-lim": expect
intelligible but buzzy audio). OUT/<stem>.wav (16 kHz) and OUT/<stem>_mel.png (the generated log-mel).
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import flags

from shared import cli


def read_pose(clip: str, pose: str | None, n_frames: int, height: int, width: int) -> np.ndarray:
  """The pose of a clip as [T, K, 3] (SynthCue 20 points or OpenPose's 137, see the module docstring)."""
  from shared.data import pose as pose_lib
  from shared.errors import DataError
  stem = clip[:-4] if clip.endswith(".mp4") else clip
  path = pose or (f"{stem}_pose.npy" if os.path.isfile(f"{stem}_pose.npy") else f"{stem}_openpose")
  if os.path.isdir(path):
    kp = pose_lib.read_openpose_dir(path, n_frames)
    return np.concatenate([kp[p] for p in ("body", "face", "hand_left", "hand_right")], axis=1)
  if not os.path.isfile(path):
    raise DataError("no pose for the clip: give --pose (a .npy or an OpenPose JSON directory), or put "
                    "<stem>_pose.npy / <stem>_openpose/ beside it", path=clip, key="pose")
  x = np.load(path, allow_pickle=False)
  if x.ndim != 3 or x.shape[0] != n_frames:
    raise DataError(f"pose has shape {x.shape}; expected [T={n_frames}, K, 3]", path=path, key="pose")
  return x.astype(np.float32)


def _clips(paths, poses, cfg):
  from shared.data.media import read_mp4
  from shared.errors import DataError
  from unicue_jax import data as data_lib
  if not paths:
    raise DataError("no clip given: python -m unicue_jax.infer --csr_workdir W clip.mp4 ...")
  if poses and len(paths) > 1:
    raise DataError("--pose names one clip's pose: give one clip with it")
  out = []
  for path in paths:
    m = read_mp4(path, with_audio=False)
    t, h, w = m.frames.shape[:3]
    if t > int(cfg.data.frames):
      raise DataError(f"clip has {t} frames, more than the trained length data.frames={cfg.data.frames}", path=path)
    sample = {"video": m.frames, "pose": read_pose(path, poses, t, h, w), "path": path}
    out.append(data_lib.prepare(sample, data=cfg.data, vocab=None, parts=("visual",)))
  return out


def infer(paths: list[str], *, csr_workdir: str | None = None, v2s_workdir: str | None = None,
          out_dir: str = "unicue_out", vocoder: str | None = None, pose: str | None = None, seed: int = 0
          ) -> list[dict]:
  from shared.checkpoint import restore
  from shared.errors import ConfigError
  from unicue_jax import data as data_lib
  from unicue_jax.task import make_task
  if not (csr_workdir or v2s_workdir):
    raise ConfigError("give --csr_workdir (transcripts) and / or --v2s_workdir (speech)")
  rows = [{"path": p} for p in paths]
  for workdir, stage in ((csr_workdir, "csr"), (v2s_workdir, "v2s")):
    if not workdir:
      continue
    r = restore(workdir)
    if r.config.model.stage != stage:
      raise ConfigError(f"{workdir} holds a {r.config.model.stage!r} checkpoint; expected stage {stage!r}")
    task = make_task(r.config)
    examples = _clips(paths, pose, r.config)
    collate = data_lib.batch_fn(r.config.data, ("visual",))
    bs = int(r.config.data.eval_batch_size)
    for start in range(0, len(examples), bs):
      chunk = examples[start:start + bs]
      batch = collate(chunk + chunk[-1:] * (bs - len(chunk)))
      if stage == "csr":
        for i, text in enumerate(task.recognizer.recognize(r.variables, batch)[:len(chunk)]):
          rows[start + i]["text"] = text
      else:
        mels = task.generator.generate(r.variables, batch, seed=seed)[:len(chunk)]
        for i, mel in enumerate(mels):
          rows[start + i].update(write_speech(rows[start + i]["path"], mel, out_dir, vocoder))
  return rows


def write_speech(path: str, mel: np.ndarray, out_dir: str, vocoder: str | None) -> dict:
  from shared.data import features
  from shared.data.media import write_wav
  from unicue_jax.evaluate import write_mel_png
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.splitext(os.path.basename(path))[0]
  if vocoder:
    import jax.numpy as jnp
    from shared.weights import load_pretrained
    module, params = load_pretrained(vocoder)
    audio = np.asarray(module.apply({"params": params}, jnp.asarray(mel)[None], crop=True))[0]
    used = vocoder
  else:
    audio, used = features.mel_to_audio(mel, features.AUDIOLDM), "griffin-lim (no trained vocoder)"
  wav, png = os.path.join(out_dir, f"{stem}.wav"), os.path.join(out_dir, f"{stem}_mel.png")
  write_wav(wav, np.clip(audio, -1, 1).astype(np.float32), 16000)
  write_mel_png(png, [mel])
  return {"wav": wav, "mel_png": png, "vocoder": used}


def define_flags():
  flags.DEFINE_string("csr_workdir", None, "Stage-1 (CSR) workdir: print the transcript.")
  flags.DEFINE_string("v2s_workdir", None, "Stage-2 (CSV2S) workdir: write the speech.")
  flags.DEFINE_string("out", "unicue_out", "Where the wav / mel images go.")
  flags.DEFINE_string("vocoder", None, "A SpeechT5HifiGan directory (config.json + safetensors).")
  flags.DEFINE_string("pose", None, "Pose of the (single) clip: .npy or an OpenPose JSON directory.")
  flags.DEFINE_integer("seed", 0, "Noise seed of the generation.")


def main():
  f = cli.FLAGS
  for row in infer(cli.ARGV[1:], csr_workdir=f.csr_workdir, v2s_workdir=f.v2s_workdir, out_dir=f.out,
                   vocoder=f.vocoder, pose=f.pose, seed=f.seed):
    print(json.dumps(row, ensure_ascii=False), flush=True)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
