"""Pinyin: toneless with ü as v, the derived syllable vocabulary, id encoders."""
from __future__ import annotations

import numpy as np
import pytest

from shared.errors import DataError
from shared.text import pinyin as P


def test_toneless_and_v():
  assert P.to_pinyin("绿色的女孩") == ["lv", "se", "de", "nv", "hai"]
  assert P.to_pinyin("我们 去 学校!") == ["wo", "men", "qu", "xue", "xiao"]
  assert P.to_pinyin("略 ok", keep_non_han=True) == ["lve", "ok"]


def test_vocab_file_is_the_derived_one():
  toks = P.load_pinyin_vocab()
  assert len(toks) == 396 and toks == sorted(toks)
  assert toks == P.derive_pinyin_vocab()
  assert len(P.gb2312_level1()) == 3755
  full = P.derive_pinyin_vocab(full=True)
  assert len(full) == 426 and set(toks) <= set(full)
  assert "lv" in toks and "nve" in toks and not any("ü" in t for t in toks)


def test_vocab_encode_decode(tmp_path):
  v = P.pinyin_vocab()
  assert len(v) == 400 and v.pad_id == v.blank_id == 0
  ids = P.encode_pinyin("你好世界", v, bos=True, eos=True)
  assert ids.dtype == np.int32 and ids[0] == v.bos_id and ids[-1] == v.eos_id
  assert v.decode(ids) == ["ni", "hao", "shi", "jie"]
  assert v.encode(["xyz"])[0] == v.unk_id
  no_unk = P.Vocab(["a", "b"], specials=("<pad>",))
  with pytest.raises(DataError, match="xyz"):
    no_unk.encode(["xyz"])
  v.save(tmp_path / "v.txt")
  assert P.Vocab.load(tmp_path / "v.txt").tokens == v.tokens
  with pytest.raises(DataError, match="missing.txt"):
    P.load_pinyin_vocab(str(tmp_path / "missing.txt"))


def test_char_vocab():
  cv = P.build_char_vocab(["我爱我家", "家 a"], min_count=1)
  assert cv.tokens[len(P.SPECIALS):] == ["家", "我", "爱"]
  assert cv.decode(P.encode_chars("我家", cv)) == ["我", "家"]
  assert P.build_char_vocab(["我爱我家"], min_count=2).tokens[-1] == "我"
