"""VALLR-Pin data: a clip -> mouth-ROI frames + character and pinyin targets, one batch for every source.

Sources (config `data.source`):
  synthcue  SynthCue `speech` mode: `lip` [T, lip_size, lip_size] grey mouth ROIs (7 consonant groups look
            alike on the lips), Chinese characters (homophones that only the sentence decides) and toneless
            pinyin; `test` = held-out speakers.
  cnvsrc    a CNVSRC / CN-CVS directory (auto_avsr manifests labels/<dataset>_<split>.csv pointing at
            mouth-ROI mp4s, 96x96 at 25 fps), read by `shared.data.layouts.cnvsrc_reader` with skip=True:
            bad clips are dropped and counted by the reader (file named in its log).
  cmlr      a CMLR directory (split lists train/val/test.csv, text/<id>.txt; `data.video_dir` the tree of
            mouth-ROI crops of its face videos, e.g. "video_roi"), `shared.data.layouts.cmlr_reader`, skip=True.
            Characters: `data.char_units` when given, else every character of the training split's
            transcripts (sorted; the export's token list keeps them).

Example (host side, numpy; `prepare`): lips [T, crop, crop] uint8, chars [N] int32, pinyin [M] int32.
ROI as auto_avsr: train = one random crop per clip + time masking (one span of up to
`time_mask_width` frames per `time_mask_stride` frames, filled with the clip's mean frame); eval =
centre crop. Normalisation ((x / 255 - 0.421) / 0.165) runs on device (`normalize`), so batches stay uint8.
Clips longer than the largest frame bucket (or with more characters than the largest label bucket) are
dropped with a warning, as auto_avsr drops clips over its max_frames.

Vocabularies: characters = `shared.text.pinyin.Vocab` (id 0 = <pad> = CTC blank, 1 <bos> = the decoder's
sos, 2 <eos>, 3 <unk>, then the units): SynthCue's world characters, or a CNVSRC `char_units.txt`
(`token id` per line; its own <blank>/<unk>/<sos/eos> lines are replaced by ours). Pinyin = the 396
toneless syllables of shared/text/pinyin_vocab.txt with the same specials.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os

import jax.numpy as jnp
import numpy as np

from shared.data import augment
from shared.data.layouts import cmlr_reader, cnvsrc_reader
from shared.data.pipeline import collate_fn, make_iterator
from shared.data.synthcue import synthcue_source
from shared.errors import ConfigError, DataError
from shared.text.pinyin import Vocab, pinyin_vocab

log = logging.getLogger(__name__)
SOURCES = ("synthcue", "cnvsrc", "cmlr")
_FOREIGN_SPECIALS = {"<blank>", "<unk>", "<sos/eos>", "<sos>", "<eos>", "<pad>", "<s>", "</s>", "<space>"}


@dataclasses.dataclass(frozen=True)
class Vocabs:
  chars: Vocab
  pinyin: Vocab


def load_char_units(path: str) -> Vocab:
  """A CNVSRC / auto_avsr `char_units.txt` (lines `token id` or `token`) -> Vocab with our specials."""
  if not os.path.isfile(path):
    raise DataError("character unit list does not exist", path=path, key="data.char_units")
  tokens = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) > 2:
        raise DataError(f"line {n}: expected `token` or `token id`, got {line.strip()!r}", path=path)
      if parts[0] not in _FOREIGN_SPECIALS:
        tokens.append(parts[0])
  if not tokens:
    raise DataError("no character units in the file", path=path)
  return Vocab(tokens)


def vocabs(data) -> Vocabs:
  """The character and pinyin vocabularies a config's `data` section implies."""
  if data.source == "synthcue":
    chars = synthcue_source(data, "train", "speech").char_vocab()
  elif data.source == "cnvsrc":
    chars = load_char_units(data.char_units)
  elif data.source == "cmlr":
    chars = (load_char_units(data.char_units) if data.char_units
             else transcript_units(data.root, data.get("video_dir", "video")))
  else:
    raise ConfigError(f"data.source={data.source!r}: expected one of {SOURCES}")
  return Vocabs(chars=chars, pinyin=pinyin_vocab())


@functools.lru_cache(maxsize=4)
def transcript_units(root: str, video_dir: str = "video") -> Vocab:
  """Every character of a CMLR training split's transcripts (of the clips present), sorted; no video is decoded."""
  reader = cmlr_reader(root, "train", video_dir=video_dir, skip=True, load_video=False)
  chars = sorted({c for e in reader.entries for c in "".join(e["text"].split())})
  if not chars:
    raise DataError("the training split has no transcript characters", path=root, key="data.root")
  return Vocab(chars)


def source(data, split: str):
  """A random-access source of DESIGN.md sample dicts (None for a bad real clip)."""
  if data.source == "synthcue":
    return synthcue_source(data, split, "speech", render_video=False, render_audio=False)
  if data.source == "cnvsrc":
    return cnvsrc_reader(data.root, split, dataset=data.dataset, skip=True, load_video=False)
  if data.source == "cmlr":
    return cmlr_reader(data.root, split, video_dir=data.get("video_dir", "video"), skip=True, load_video=False)
  raise ConfigError(f"data.source={data.source!r}: expected one of {SOURCES}")


def _where(sample) -> str:
  return str(sample.get("path", f"SynthCue sample {sample.get('index', '?')}"))


def prepare(sample, rng: np.random.Generator | None, *, data, vocab: Vocabs) -> dict | None:
  """sample -> {lips [T, crop, crop] uint8, chars [N] int32, pinyin [M] int32}; None drops the clip.

  rng None = evaluation (centre crop, no masking)."""
  if sample is None:
    return None
  lip = sample.get("lip")
  if lip is None or np.ndim(lip) != 3 or lip.shape[0] == 0:
    shape = None if lip is None else np.shape(lip)
    raise DataError(f"expected a mouth-ROI video 'lip' [T, H, W] uint8, got {shape}", path=_where(sample),
                    key="lip")
  crop = int(data.crop)
  if min(lip.shape[1:]) < crop:
    raise DataError(f"mouth ROI {lip.shape[1]}x{lip.shape[2]} is smaller than data.crop={crop}",
                    path=_where(sample), key="lip")
  text = "".join(str(sample.get("text", "")).split())
  syllables = str(sample.get("pinyin") or "").split()
  if not text:
    raise DataError("empty transcript", path=_where(sample), key="text")
  t = lip.shape[0]
  if t > max(data.frame_buckets) or len(text) > max(data.label_buckets) or len(syllables) > max(data.label_buckets):
    log.warning("dropping %s: %d frames / %d characters exceed the largest bucket (%d frames, %d labels)",
                _where(sample), t, len(text), max(data.frame_buckets), max(data.label_buckets))
    return None
  if rng is None:
    lip = augment.center_crop(lip, crop)
  else:
    lip = augment.random_crop(lip, rng, crop)
    n_masks = t // int(data.time_mask_stride)
    if n_masks and data.time_mask_width:
      lip, _ = augment.time_mask(lip, rng, n_masks=n_masks, max_width=int(data.time_mask_width))
  return {"lips": np.ascontiguousarray(lip, np.uint8),
          "chars": vocab.chars.encode(list(text)),
          "pinyin": vocab.pinyin.encode(syllables)}


def normalize(lips):
  """uint8 [B, T, H, W] -> float32, (x / 255 - 0.421) / 0.165 (auto_avsr / AV-HuBERT)."""
  return (lips.astype(jnp.float32) / 255.0 - augment.LIP_MEAN) / augment.LIP_STD


def batch_fn(data):
  """Padded batch: lips [B, T, c, c] uint8 + lips_lengths/_mask, chars / pinyin [B, L] + lengths/masks."""
  return collate_fn(keys=["lips", "chars", "pinyin"],
                    buckets={"lips": list(data.frame_buckets), "chars": list(data.label_buckets),
                             "pinyin": list(data.label_buckets)})


def train_iterator(data, vocab: Vocabs, *, batch_size: int, seed: int):
  """Checkpointable grain iterator of augmented training batches (host-local batch_size)."""
  def aug(sample, rng):
    return prepare(sample, rng, data=data, vocab=vocab)
  return make_iterator(source(data, "train"), batch_fn(data), batch_size=batch_size, seed=seed,
                       random_map_fn=aug, skip_none=True)


def eval_batches(data, vocab: Vocabs, split: str, n: int, batch_size: int):
  """Deterministic evaluation batches over the first n usable clips of `split`: yields (batch, truths),
  truths = [(characters, pinyin) per real utterance]: a batch may hold more rows than truths (padding)."""
  src, collate = source(data, split), batch_fn(data)
  examples, truths = [], []
  for i in range(len(src)):
    if len(truths) >= n:
      break
    s = src[i]
    ex = prepare(s, None, data=data, vocab=vocab)
    if ex is None:
      continue
    examples.append(ex)
    truths.append(("".join(str(s["text"]).split()), " ".join(str(s.get("pinyin") or "").split())))
    if len(examples) == batch_size:
      yield collate(examples), truths[-batch_size:]
      examples = []
  if examples:   # the last batch is padded with copies of its last clip: one compiled shape for every batch
    k = len(examples)
    yield collate(examples + examples[-1:] * (batch_size - k)), truths[-k:]
