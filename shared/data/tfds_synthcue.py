"""SynthCue as a tensorflow-datasets array_record dataset (no TensorFlow needed).

The path a real dataset takes: a tfds builder writes shards once, `tfds.data_source` reads them back
as a random-access source that grain pipelines consume like `SynthCue` itself.

    builder = SynthcueBuilder(config=builder_config("tiny", SynthCueConfig(mode="cued"),
                                                    {"train": 64, "test": 16}), data_dir=DIR)
    builder.download_and_prepare()            # writes DIR/synthcue/tiny/1.0.0/*.array_record*
    ds = tfds.data_source("synthcue/tiny", data_dir=DIR)  # or builder.as_data_source()
    sample = decode(ds["train"][0])                      # the SynthCue sample dict again

Only tfds >= 4.9, array_record and `importlib_resources` are needed (`as_dataset` would need TF).
Records are stored in tfds' shuffled order; `index` says which SynthCue sample a record is.
Custom configs must be registered under a name (`builder_config`) before `tfds.data_source` can
find them by name; `SynthcueBuilder(config=..., data_dir=...).as_data_source()` always works.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds

from shared.data.synthcue import N_KEYPOINTS, SynthCueConfig, synthcue_source

_TEXT_KEYS = ("text", "pinyin", "gloss")
_SCALAR_KEYS = ("speaker", "index", "fps", "sample_rate")
_INT_SEQ = ("char_ids", "syllable_ids", "initial_ids", "final_ids", "viseme_ids", "vowel_frames",
            "hand_shape", "hand_position", "hand_frames", "gloss_ids", "gloss_order", "gloss_form")


@dataclasses.dataclass(eq=False)
class SynthcueBuilderConfig(tfds.core.BuilderConfig):
  synth: SynthCueConfig = SynthCueConfig()
  split_sizes: tuple[tuple[str, int], ...] = (("train", 256), ("validation", 32), ("test", 32))


def builder_config(name: str, synth: SynthCueConfig, split_sizes: Mapping[str, int],
                   register: bool = True) -> SynthcueBuilderConfig:
  """A named builder config; with `register`, `tfds.data_source("synthcue/<name>")` finds it."""
  cfg = SynthcueBuilderConfig(name=name, version=SynthcueBuilder.VERSION,
                              description=f"SynthCue {synth}", synth=synth,
                              split_sizes=tuple(split_sizes.items()))
  if register and name not in SynthcueBuilder.builder_configs:
    SynthcueBuilder.builder_configs[name] = cfg
  return cfg


class SynthcueBuilder(tfds.core.GeneratorBasedBuilder):
  """tfds builder of SynthCue shards (array_record by default)."""
  name = "synthcue"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "SynthCue samples with ground truth."}
  BUILDER_CONFIGS = [
      SynthcueBuilderConfig(name="cued", description="cued speech, 64 px frames, 40 px lips"),
      SynthcueBuilderConfig(name="sign", description="sign glosses with mouthing",
                            synth=SynthCueConfig(mode="sign")),
      SynthcueBuilderConfig(name="speech", description="face and voice only",
                            synth=SynthCueConfig(mode="speech")),
  ]

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    sc = self.builder_config.synth
    zlib, raw = tfds.features.Encoding.ZLIB, tfds.features.Encoding.BYTES
    feats: dict[str, Any] = {
        "lip": tfds.features.Tensor(shape=(None, sc.lip_size, sc.lip_size), dtype=np.uint8,
                                    encoding=zlib),
        "pose": tfds.features.Tensor(shape=(None, N_KEYPOINTS, 3), dtype=np.float32, encoding=zlib),
        "syllable_frames": tfds.features.Tensor(shape=(None, 2), dtype=np.int32, encoding=raw),
        "syllable_samples": tfds.features.Tensor(shape=(None, 2), dtype=np.int32, encoding=raw),
        "mouth_open": tfds.features.Tensor(shape=(None,), dtype=np.float32, encoding=raw),
        "lip_params": tfds.features.Tensor(shape=(None, 3), dtype=np.float32, encoding=raw),
    }
    if sc.render_video:
      feats["video"] = tfds.features.Tensor(shape=(None, sc.frame_size, sc.frame_size, 3),
                                            dtype=np.uint8, encoding=zlib)
    if sc.render_audio:
      feats["audio"] = tfds.features.Tensor(shape=(None,), dtype=np.float32, encoding=raw)
    feats.update({k: tfds.features.Tensor(shape=(None,), dtype=np.int32, encoding=raw)
                  for k in _INT_SEQ})
    feats.update({k: tfds.features.Text() for k in _TEXT_KEYS})
    feats.update({k: tfds.features.Scalar(dtype=np.int32) for k in _SCALAR_KEYS})
    return tfds.core.DatasetInfo(builder=self, description=__doc__.splitlines()[0],
                                 features=tfds.features.FeaturesDict(feats))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download: samples are generated
    return {split: self._generate_examples(split, n)
            for split, n in self.builder_config.split_sizes}

  def _generate_examples(self, split: str, n: int):
    src = synthcue_source(self.builder_config.synth, split, num_samples=n)
    for i in range(n):
      yield i, src[i]


def decode(example: Mapping[str, Any]) -> dict[str, Any]:
  """A record read back from tfds -> the SynthCue sample dict (text as str, scalars as int)."""
  out = dict(example)
  for k in _TEXT_KEYS:
    v = out.get(k)
    if isinstance(v, (bytes, np.bytes_)):
      out[k] = bytes(v).decode("utf-8")
  for k in _SCALAR_KEYS:
    if k in out:
      out[k] = int(out[k])
  return out


class DecodedSource:
  """Wrap a tfds data source so `src[i]` is a decoded SynthCue sample (for grain pipelines)."""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return decode(self.source[i])
