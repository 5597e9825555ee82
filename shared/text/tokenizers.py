"""Tokenizers from local files only (never a hub): HF tokenizer directories, tokenizer.json, word-level.

  tok = load_tokenizer("path/to/dir_or_tokenizer.json")      # a transformers PreTrainedTokenizerFast
  ids, lengths = encode_batch(tok, ["a b", "c"], pad_id=0)   # numpy [B, L] int32, [B]
  tok = word_level_tokenizer(["ni", "hao", ...])             # tiny tokenizers for SynthCue / tests
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from shared.errors import DataError

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


def load_tokenizer(path: str):
  """Loads a tokenizer from a local directory (tokenizer.json / tokenizer_config.json / sentencepiece
  model) or a tokenizer.json file. Never contacts a hub."""
  from transformers import AutoTokenizer, PreTrainedTokenizerFast
  if not os.path.exists(path):
    raise DataError("tokenizer path does not exist (only local files are read, never a hub)", path=path)
  if os.path.isfile(path):
    if not path.endswith(".json"):
      raise DataError("expected a tokenizer.json file or a tokenizer directory", path=path)
    tok = PreTrainedTokenizerFast(tokenizer_file=path)
    vocab = tok.get_vocab()  # a bare tokenizer.json has no special-token map: take the usual names
    names = {"pad_token": ("<pad>", "[PAD]"), "bos_token": ("<s>", "[CLS]", "<|begin_of_text|>"),
             "eos_token": ("</s>", "[SEP]", "<|end_of_text|>", "<|endoftext|>"), "unk_token": ("<unk>", "[UNK]")}
    found = {k: next(c for c in cands if c in vocab) for k, cands in names.items() if any(c in vocab for c in cands)}
    if found:
      tok.add_special_tokens(found)
    return tok
  try:
    return AutoTokenizer.from_pretrained(path, local_files_only=True)
  except (OSError, ValueError) as e:
    raise DataError(f"cannot load a tokenizer from this directory: {e}", path=path) from None


def encode_batch(tokenizer, texts: Sequence[str], *, pad_id: int | None = None, add_special_tokens: bool = False,
                 append_eos: bool = False):
  """-> (ids [B, L] int32 right-padded with pad_id, lengths [B] int32)."""
  seqs = [tokenizer.encode(t, add_special_tokens=add_special_tokens) for t in texts]
  if append_eos:
    if tokenizer.eos_token_id is None:
      raise DataError("append_eos=True but the tokenizer has no eos token")
    seqs = [s + [tokenizer.eos_token_id] for s in seqs]
  return pad_sequences(seqs, tokenizer.pad_token_id if pad_id is None else pad_id)


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = 0, length: int | None = None):
  lengths = np.asarray([len(s) for s in seqs], np.int32)
  out = np.full((len(seqs), int(length or max(lengths.max(initial=0), 1))), pad_id, np.int32)
  for i, s in enumerate(seqs):
    out[i, :len(s)] = s
  return out, lengths


def word_level_tokenizer(words: Sequence[str], specials: Sequence[str] = SPECIALS):
  """A whitespace word-level PreTrainedTokenizerFast (ids: specials first, then words in order)."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  vocab = {w: i for i, w in enumerate(list(specials) + [w for w in words if w not in specials])}
  tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials[3]))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=specials[0], bos_token=specials[1],
                                 eos_token=specials[2], unk_token=specials[3])
