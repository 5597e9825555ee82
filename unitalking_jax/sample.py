"""`python -m unitalking_jax.sample --workdir DIR --task t2av --text "..." [--image F] [--ref-audio F]
[--video F] --out out.mp4`

Generates one clip with the latest checkpoint in DIR (config from DIR/config.json). --text: toneless
pinyin syllables ("ma ba luo") or Chinese characters (converted with pypinyin); with data.text = "umt5" any
prompt (encoded by the config's frozen UMT5, data.text_tokenizer / data.text_encoder). --image: first frame (PNG/JPG,
resized to the config's frame size; ti2av). --ref-audio: a wav whose voice to mimic (tr2av). --video: an mp4
whose frames are kept (tv2a). Writes OUT (mp4 with audio) and, beside it, OUT.wav, OUT_frames.png, OUT_mel.png.
"""
from __future__ import annotations

import os

import numpy as np
from absl import flags

from shared import cli
from shared.checkpoint import restore
from shared.errors import DataError
from shared.text.pinyin import is_han, to_pinyin
from unitalking_jax import data as data_lib
from unitalking_jax.model import model_from_config
from unitalking_jax.samples import write_samples
from unitalking_jax.task import TASKS, make_task

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/, config.json).")
  flags.DEFINE_enum("task", "t2av", TASKS, "Generation task.")
  flags.DEFINE_string("text", "", "Pinyin syllables or Chinese text.")
  flags.DEFINE_string("image", None, "First frame image (ti2av): a face crop, resized to the model's frame size.")
  flags.DEFINE_string("ref_audio", None, "Reference voice wav (tr2av).")
  flags.DEFINE_string("video", None, "Given video mp4 (tv2a): face crops, resized to the model's frame size.")
  flags.DEFINE_string("out", "out.mp4", "Output mp4.")
  flags.DEFINE_integer("seed", 0, "Noise seed.")
  flags.mark_flags_as_required(["workdir"])


def build_inputs(cfg, text: str, image=None, ref_audio=None, video=None) -> dict:
  """One example in the training layout (unused conditions from a held-out clip's shapes, zeroed)."""
  from PIL import Image
  from shared.data.media import read_mp4, read_wav
  d = cfg.data
  base = data_lib.prepare(data_lib.source(cfg, "test")[0], cfg)
  c = data_lib.codecs(cfg)
  out = {k: np.zeros_like(v) for k, v in base.items()}
  if data_lib.text_kind(cfg) == "umt5":
    out["text"], out["text_mask"] = data_lib.prompt_features(cfg, text)
  else:
    syl = to_pinyin(text) if any(is_han(ch) for ch in text) else text.split()
    ids = data_lib.VOCAB.encode(syl)[:d.text_len]
    if not len(ids) or (ids == data_lib.VOCAB.unk_id).any():
      raise DataError(f"text {text!r}: expected pinyin syllables of the vocabulary (shared/text/pinyin_vocab.txt) "
                      f"or Chinese characters", key="text")
    out["text"], out["text_mask"] = data_lib.pinyin_text(syl, cfg)
  side = data_lib.model_frame_size(cfg)  # given images / videos are taken as face crops and resized to it
  if image is not None:
    img = np.asarray(Image.open(image).convert("RGB").resize((side, side)), np.uint8)
    out["video"] = c.encode_video(np.repeat(img[None], d.frames, 0))
  if video is not None:
    frames = read_mp4(video, with_audio=False).frames
    frames = np.stack([np.asarray(Image.fromarray(f).resize((side, side))) for f in frames[:d.frames]])
    if frames.shape[0] < d.frames:
      frames = np.concatenate([frames, np.repeat(frames[-1:], d.frames - frames.shape[0], 0)])
    out["video"] = c.encode_video(frames)
  if ref_audio is not None:
    audio, _ = read_wav(ref_audio, sample_rate=16000)
    m = c.encode_audio(audio, d.frames * data_lib.MEL_PER_FRAME)
    out["ref"] = m.reshape(d.frames, -1)
  return {k: v[None] for k, v in out.items()}


def main():
  r = restore(FLAGS.workdir, model_fn=model_from_config)   # params only: no trainer, no data pipeline
  cfg = r.config
  batch = build_inputs(cfg, FLAGS.text, FLAGS.image, FLAGS.ref_audio, FLAGS.video)
  v, a = make_task(cfg, r.model).generate(r.params, batch, FLAGS.task, seed=FLAGS.seed)
  out = os.path.abspath(FLAGS.out)
  name = os.path.splitext(os.path.basename(out))[0]
  write_samples(os.path.dirname(out), cfg, np.asarray(v), np.asarray(a), [name])
  print(f"wrote {out}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
