"""`python -m unitalking_jax.sample --workdir DIR --task t2av --text "..." [--image F] [--ref_audio F]
[--video F] --out out.mp4`       (or `--release R` instead of `--workdir DIR`)

Generates one clip with the latest checkpoint in DIR (config from DIR/config.json), or, with --release R, from a
release directory written by `python -m unitalking_jax.export` (unitalking_jax/release.py: its transformer,
codecs, tokenizer and scheduler settings; no workdir, no SynthCue). With --release the initial noise is
jax.random.normal(key(--seed), [1, Nv + Na]), exactly what the PyTorch pipeline takes as `noise=`
(unitalking_jax.torch_pipeline). --text: toneless
pinyin syllables ("ma ba luo") or Chinese characters (converted with pypinyin); with data.text = "umt5" any
prompt (encoded by the config's frozen UMT5, data.text_tokenizer / data.text_encoder). --image: first frame (PNG/JPG,
resized to the config's frame size; ti2av). --ref_audio: a wav whose voice to mimic (tr2av; with data.ref_len = N
> 0 read at its own length, truncated / zero-padded to N reference tokens, as the release pipelines do). --video: an mp4
whose frames are kept (tv2a). Writes OUT (mp4 with audio) and, beside it, OUT.wav, OUT_frames.png, OUT_mel.png.

Each task's inputs are declared in REQUIRED_INPUTS and checked before the checkpoint is read: a missing one, one
the task would ignore, or an empty --text is a ConfigError naming the flag; a file that does not exist or does
not decode is a DataError naming it (the files are decoded before the checkpoint is read too). Errors: one line,
exit 2 (shared.cli; --verbose adds the traceback).
"""
from __future__ import annotations

import os

import numpy as np
from absl import flags

from shared import cli
from shared.errors import ConfigError, DataError
from unitalking_jax.release import read_inputs   # decodes --image / --video / --ref_audio (JAX-free)

FLAGS = flags.FLAGS

# The inputs each task needs beside --text (the keys are unitalking_jax.task.TASKS, in its order).
REQUIRED_INPUTS = {"t2av": (), "tv2a": ("video",), "ti2av": ("image",), "tr2av": ("ref_audio",)}
INPUTS = {"video": "an mp4 whose frames are kept", "image": "the first frame: a face crop, PNG or JPG",
          "ref_audio": "a wav whose voice to mimic"}


def define_flags():
  flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/, config.json).")
  flags.DEFINE_enum("task", "t2av", list(REQUIRED_INPUTS), "Generation task.")
  flags.DEFINE_string("text", "", "Pinyin syllables or Chinese text.")
  flags.DEFINE_string("image", None, "First frame image (ti2av): a face crop, resized to the model's frame size.")
  flags.DEFINE_string("ref_audio", None, "Reference voice wav (tr2av).")
  flags.DEFINE_string("video", None, "Given video mp4 (tv2a): face crops, resized to the model's frame size.")
  flags.DEFINE_string("out", "out.mp4", "Output mp4.")
  flags.DEFINE_integer("seed", 0, "Noise seed.")
  flags.DEFINE_string("release", None, "A release directory (python -m unitalking_jax.export) instead of --workdir.")
  flags.register_multi_flags_validator(
      ["workdir", "release"], lambda v: (v["workdir"] is None) != (v["release"] is None),
      message="--workdir is required (a training workdir), or --release R (a release directory): exactly one")


def check_inputs(task: str, text: str, **given: str | None) -> None:
  """ConfigError naming the flag: an unknown task, an empty --text, an input the task needs and was not given,
  or one it would ignore; DataError naming the flag and file: a given file that does not exist.
  given: {"image": path or None, "ref_audio": ..., "video": ...}."""
  if task not in REQUIRED_INPUTS:
    raise ConfigError(f"--task {task!r}: expected one of {list(REQUIRED_INPUTS)}")
  if not (text or "").strip():
    raise ConfigError(f"--text is empty: --task {task} needs the words to speak "
                      f"(pinyin syllables such as \"ma ba luo\", or Chinese characters)")
  for name in REQUIRED_INPUTS[task]:
    if not given.get(name):
      raise ConfigError(f"--task {task} needs --{name} ({INPUTS[name]})")
  for name, value in given.items():
    if value and name not in REQUIRED_INPUTS[task]:
      users = [t for t, need in REQUIRED_INPUTS.items() if name in need]
      raise ConfigError(f"--task {task} does not use --{name} (it is for --task {' / '.join(users)}): "
                        f"drop it or change --task")
  for name, value in given.items():
    if value and not os.path.isfile(value):
      raise DataError(f"--{name}: no such file", path=value)


def build_inputs(cfg, text: str, image=None, ref_audio=None, video=None) -> dict:
  """One example in the training layout (unused conditions from a held-out clip's shapes, zeroed).
  image / ref_audio / video: a file path or what read_inputs decoded from one."""
  from PIL import Image
  from shared.text.pinyin import is_han, to_pinyin
  from unitalking_jax import data as data_lib
  given = {"image": image, "ref_audio": ref_audio, "video": video}
  given.update(read_inputs(**{k: v for k, v in given.items() if isinstance(v, (str, os.PathLike))}))
  image, ref_audio, video = given["image"], given["ref_audio"], given["video"]
  d = cfg.data
  if data_lib.text_kind(cfg) == "umt5":
    text_features = data_lib.prompt_features(cfg, text)
  else:   # checked before the codecs are fitted: a wrong --text fails in seconds
    syl = to_pinyin(text) if any(is_han(ch) for ch in text) else text.split()
    ids = data_lib.VOCAB.encode(syl)
    unknown = [s for s, i in zip(syl, ids) if i == data_lib.VOCAB.unk_id]
    if unknown or not len(ids):
      raise ConfigError(f"--text {text!r}: {unknown or 'nothing'} not in the pinyin vocabulary "
                        f"(shared/text/pinyin_vocab.txt): give toneless pinyin syllables or Chinese characters")
    if len(ids) > d.text_len:
      raise ConfigError(f"--text has {len(ids)} syllables: this model takes at most {d.text_len} (data.text_len)")
    text_features = data_lib.pinyin_text(syl, cfg)
  base = data_lib.prepare(data_lib.source(cfg, "test")[0], cfg)
  c = data_lib.codecs(cfg)
  out = {k: np.zeros_like(v) for k, v in base.items()}
  out["text"], out["text_mask"] = text_features
  side = data_lib.model_frame_size(cfg)  # given images / videos are taken as face crops and resized to it
  if image is not None:
    img = np.asarray(Image.fromarray(image).resize((side, side)), np.uint8)
    out["video"] = c.encode_video(np.repeat(img[None], d.frames, 0))
  if video is not None:
    frames = np.stack([np.asarray(Image.fromarray(f).resize((side, side))) for f in video[:d.frames]])
    if frames.shape[0] < d.frames:
      frames = np.concatenate([frames, np.repeat(frames[-1:], d.frames - frames.shape[0], 0)])
    out["video"] = c.encode_video(frames)
  if ref_audio is not None:   # data.ref_len > 0: the voice at its own length, N tokens (data.reference_tokens)
    out["ref"] = data_lib.reference_tokens(c, cfg, np.asarray(ref_audio, np.float32).reshape(-1))
  return {k: v[None] for k, v in out.items()}


def output_path(out: str) -> str:
  """--out as an absolute path; ConfigError naming --out when it is a directory."""
  out = os.path.abspath(out)
  if os.path.isdir(out):
    raise ConfigError(f"--out {out} is a directory: expected the mp4 file to write (e.g. {out}/sample.mp4)")
  return out


def main():
  f = FLAGS
  given = {"image": f.image or None, "ref_audio": f.ref_audio or None, "video": f.video or None}
  check_inputs(f.task, f.text, **given)        # all before the checkpoint is read: seconds, not minutes
  media = read_inputs(**given)
  out = output_path(f.out)
  if f.release:
    sample_release(f.release, f.task, f.text, media, out, f.seed)
    return
  from shared.checkpoint import restore
  r = restore(f.workdir)   # params only: no trainer, no data pipeline
  cli.make_dir(os.path.dirname(out), "the folder of --out")   # (before generating)
  from unitalking_jax.model import model_from_config   # (after restore: a bad --workdir fails in a second)
  from unitalking_jax.samples import write_samples
  from unitalking_jax.task import make_task
  cfg = r.config
  batch = build_inputs(cfg, f.text, **media)
  v, a = make_task(cfg, model_from_config(cfg)).generate(r.params, batch, f.task, seed=f.seed)
  name = os.path.splitext(os.path.basename(out))[0]
  write_samples(os.path.dirname(out), cfg, np.asarray(v), np.asarray(a), [name])
  print(f"wrote {out}")


def sample_release(path: str, task: str, text: str, media: dict, out: str, seed: int = 0) -> str:
  """One clip from a release directory in JAX: OUT (mp4 with audio, 4x enlarged as the workdir path writes it)
  and OUT.wav. media: read_inputs' decoded files."""
  from unitalking_jax import release
  from unitalking_jax.samples import MP4_SCALE
  rel = release.jax_codecs(release.Release.load(path))   # VAE releases: the Wan / mel VAEs of R/vae, R/audio_vae
  task, batch = release.inputs(rel, text, task=task, text_encoder=release.jax_text_encoder(rel),
                               **{k: media.get(k) for k in INPUTS})
  cli.make_dir(os.path.dirname(out), "the folder of --out")
  v, a = release.jax_generate(rel, batch, task, seed=seed)
  frames, audio = rel.decode(v[0], a[0])
  release.write_media(out, frames, audio, float(rel.meta["fps"]), MP4_SCALE)
  print(f"wrote {out}")
  return out


if __name__ == "__main__":
  define_flags()
  cli.run(main)
