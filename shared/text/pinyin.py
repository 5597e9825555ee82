"""Toneless pinyin, the pinyin-syllable vocabulary, character vocabularies and id encoders.

Pinyin comes from pypinyin (`lazy_pinyin(text, style=Style.NORMAL)`): toneless, ü written as `v`
(`lv`, `nve`), one syllable per Han character; anything that is not Han is dropped (or kept as
its own token with `keep_non_han=True`).

The syllable vocabulary `pinyin_vocab.txt` (beside this file, one syllable per line, sorted) is
*derived*, not hand-written: take the 3,755 GB2312 level-1 characters (bytes 0xB0A1..0xD7F9), read
each with pypinyin's default (most common) reading in Style.NORMAL, and keep the distinct
syllables: 396 of them. `derive_pinyin_vocab()` recomputes it; `derive_pinyin_vocab(full=True)`
takes every reading (heteronyms included) of every character in pypinyin's dictionary: 426 (it adds
rare syllables such as biang, chua, den, fiao, hm, ng, ...). The VALLR-Pin paper reports "a
vocabulary of 397 modeling units" for its toneless pinyin decoder without saying how they were
counted. 397 = our 396 + 1 is what one special unit (blank/unk/eos) gives, and a different
character set (e.g. the training corpus's characters, where a reading like `lo`, `ei` or `den`
can appear) gives a similar count; the paper's list is not public, so we do not guess it: we keep
the reproducible 396 syllables and add our special tokens separately (`Vocab.specials`), so a
pinyin decoder's output size is 396 + len(specials) = 400.

Encoders: `Vocab` maps tokens to int32 ids. Id 0 is `<pad>`, which doubles as the CTC blank;
`<bos>`, `<eos>`, `<unk>` follow, then the tokens. `encode` returns int32 numpy arrays.
"""
from __future__ import annotations

import collections
import os
from typing import Iterable, Sequence

import numpy as np
from pypinyin import Style, lazy_pinyin, pinyin

from shared.errors import DataError

VOCAB_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pinyin_vocab.txt")
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


def is_han(ch: str) -> bool:
  """True for a CJK unified ideograph (basic block and extension A)."""
  o = ord(ch)
  return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF


def to_pinyin(text: str, *, keep_non_han: bool = False) -> list[str]:
  """Toneless pinyin syllables of `text` (ü as v), one per Han character.

  Non-Han characters (spaces, punctuation, latin) are dropped unless `keep_non_han`.
  """
  if keep_non_han:
    return [s.strip() for s in lazy_pinyin(text, style=Style.NORMAL) if s.strip()]
  han = "".join(c for c in text if is_han(c))
  return lazy_pinyin(han, style=Style.NORMAL) if han else []


def gb2312_level1() -> list[str]:
  """The 3,755 GB2312 level-1 characters, in code order (sorted by pinyin)."""
  chars = []
  for hi in range(0xB0, 0xD8):
    for lo in range(0xA1, 0xFF):
      try:
        chars.append(bytes([hi, lo]).decode("gb2312"))
      except UnicodeDecodeError:
        continue
  return chars


def derive_pinyin_vocab(full: bool = False) -> list[str]:
  """Recompute the syllable vocabulary (see module docstring): 396 (level 1) or 426 (full)."""
  if not full:
    return sorted({lazy_pinyin(c, style=Style.NORMAL)[0] for c in gb2312_level1()})
  from pypinyin.pinyin_dict import pinyin_dict
  out = set()
  for cp in pinyin_dict:
    out.update(pinyin(chr(cp), style=Style.NORMAL, heteronym=True)[0])
  return sorted(out)


def load_pinyin_vocab(path: str | None = None) -> list[str]:
  """Read the syllable vocabulary file (one syllable per line)."""
  path = path or VOCAB_PATH
  try:
    with open(path, encoding="utf-8") as f:
      toks = [ln.strip() for ln in f if ln.strip()]
  except OSError as e:
    raise DataError(f"cannot read pinyin vocabulary: {e}", path=path) from e
  if len(set(toks)) != len(toks):
    raise DataError("pinyin vocabulary has duplicate syllables", path=path)
  return toks


def write_pinyin_vocab(path: str | None = None) -> int:
  """(Re)write `pinyin_vocab.txt` from `derive_pinyin_vocab()`; returns the number of syllables."""
  toks = derive_pinyin_vocab()
  with open(path or VOCAB_PATH, "w", encoding="utf-8") as f:
    f.write("\n".join(toks) + "\n")
  return len(toks)


class Vocab:
  """Token <-> id table with leading special tokens (id 0 = `<pad>` = CTC blank)."""

  def __init__(self, tokens: Sequence[str], specials: Sequence[str] = SPECIALS):
    self.specials = tuple(specials)
    self.tokens = list(self.specials) + [t for t in tokens if t not in self.specials]
    self.index = {t: i for i, t in enumerate(self.tokens)}
    if len(self.index) != len(self.tokens):
      raise DataError("vocabulary tokens must be unique")
    self.unk_id = self.index.get("<unk>")

  pad_id = property(lambda self: self.index.get("<pad>", 0))
  blank_id = pad_id
  bos_id = property(lambda self: self.index.get("<bos>"))
  eos_id = property(lambda self: self.index.get("<eos>"))

  def __len__(self) -> int:
    return len(self.tokens)

  def encode(self, tokens: Iterable[str], *, bos: bool = False, eos: bool = False) -> np.ndarray:
    """tokens -> int32 ids [N (+bos +eos)]; unknown tokens map to `<unk>` (error if none)."""
    ids = []
    for t in tokens:
      i = self.index.get(t, self.unk_id)
      if i is None:
        raise DataError(f"token {t!r} not in vocabulary and no <unk>", key=t)
      ids.append(i)
    if bos:
      ids.insert(0, self.bos_id)
    if eos:
      ids.append(self.eos_id)
    return np.asarray(ids, np.int32)

  def decode(self, ids: Iterable[int], *, strip_specials: bool = True) -> list[str]:
    """ids -> tokens; drops special tokens unless told otherwise."""
    n = len(self.specials)
    return [self.tokens[int(i)] for i in ids if not (strip_specials and int(i) < n)]

  def save(self, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
      f.write("\n".join(self.tokens[len(self.specials):]) + "\n")

  @classmethod
  def load(cls, path: str, specials: Sequence[str] = SPECIALS) -> "Vocab":
    return cls(load_pinyin_vocab(path), specials)


def pinyin_vocab(path: str | None = None) -> Vocab:
  """The pinyin-syllable `Vocab` (specials + 396 syllables)."""
  return Vocab(load_pinyin_vocab(path))


def build_char_vocab(texts: Iterable[str], *, min_count: int = 1, han_only: bool = True) -> Vocab:
  """Character vocabulary from texts: characters seen >= min_count times, most frequent first."""
  counts = collections.Counter()
  for t in texts:
    counts.update(c for c in t if (is_han(c) if han_only else not c.isspace()))
  toks = [c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
  return Vocab(toks)


def encode_pinyin(text: str, vocab: Vocab, **kw) -> np.ndarray:
  """Han text -> pinyin syllable ids (int32)."""
  return vocab.encode(to_pinyin(text), **kw)


def encode_chars(text: str, vocab: Vocab, **kw) -> np.ndarray:
  """Text -> character ids (int32); spaces dropped."""
  return vocab.encode([c for c in text if not c.isspace()], **kw)
