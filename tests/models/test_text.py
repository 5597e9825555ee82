"""Tokenizers from local files; prompt assembly (instruction + modality + target, labels -100 outside)."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from shared.errors import DataError
from shared.text.prompts import IGNORE, assemble, lm_loss
from shared.text.tokenizers import encode_batch, load_tokenizer, word_level_tokenizer


def test_tokenizer_local_roundtrip(tmp_path):
  tok = word_level_tokenizer(["ni", "hao", "ma", "wo"])
  tok.save_pretrained(str(tmp_path))
  for src in (str(tmp_path), str(tmp_path / "tokenizer.json")):
    t = load_tokenizer(src)
    ids, lengths = encode_batch(t, ["ni hao ma", "wo zzz"], pad_id=0, append_eos=True)
    np.testing.assert_array_equal(ids, [[4, 5, 6, 2], [7, 3, 2, 0]])
    np.testing.assert_array_equal(lengths, [4, 3])
    assert t.decode([4, 5]) == "ni hao"
  with pytest.raises(DataError, match="does not exist"):
    load_tokenizer(str(tmp_path / "absent"))


def _reference(instr, il, mod, ml, tgt, tids, tl, side):
  rows, labels = [], []
  for i in range(instr.shape[0]):
    seq = np.concatenate([instr[i, :il[i]], mod[i, :ml[i]], tgt[i, :tl[i]]])
    lab = [IGNORE] * (il[i] + ml[i]) + list(tids[i, :tl[i]])
    rows.append(seq)
    labels.append(lab)
  return rows, labels


@pytest.mark.parametrize("side", ["right", "left"])
def test_assemble_packs_segments(side):
  rng = np.random.default_rng(0)
  b, e = 3, 4
  instr, mod, tgt = (rng.normal(size=(b, n, e)).astype(np.float32) for n in (5, 6, 3))
  tids = rng.integers(0, 50, (b, 3))
  il, ml, tl = np.array([5, 2, 3]), np.array([6, 1, 0]), np.array([3, 1, 2])
  out = assemble(jnp.asarray(instr), il, jnp.asarray(mod), ml, jnp.asarray(tgt), jnp.asarray(tids), tl, pad_side=side)
  rows, labels = _reference(instr, il, mod, ml, tgt, tids, tl, side)
  total = out["inputs_embeds"].shape[1]
  assert total == 14
  for i in range(b):
    n = len(rows[i])
    sl = slice(0, n) if side == "right" else slice(total - n, total)
    np.testing.assert_array_equal(out["inputs_embeds"][i, sl], rows[i])
    np.testing.assert_array_equal(out["labels"][i, sl], labels[i])
    np.testing.assert_array_equal(out["positions"][i, sl], np.arange(n))
    assert int(out["attention_mask"][i].sum()) == n
    pad = np.ones(total, bool)
    pad[sl] = False
    assert (np.asarray(out["labels"][i])[pad] == IGNORE).all()
    assert (np.asarray(out["inputs_embeds"][i])[pad] == 0).all()


def test_lm_loss_matches_torch_cross_entropy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 7, 11)).astype(np.float32)
  labels = rng.integers(0, 11, (2, 7))
  labels[:, :3] = IGNORE
  labels[1, 6] = IGNORE
  ref = torch.nn.functional.cross_entropy(torch.from_numpy(logits[:, :-1]).reshape(-1, 11),
                                          torch.from_numpy(labels[:, 1:]).reshape(-1), ignore_index=IGNORE)
  np.testing.assert_allclose(lm_loss(jnp.asarray(logits), jnp.asarray(labels)), ref.item(), rtol=1e-6)
