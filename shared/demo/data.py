"""Procedural sorting data as a grain random-access source; deterministic from (seed, index)."""
from __future__ import annotations

import grain
import jax
import numpy as np


class SortSource:
  """Item i: {'tokens': [L] int32 random, 'target': [L] int32 sorted}. A grain RandomAccessDataSource."""

  def __init__(self, size: int, length: int, vocab: int, seed: int):
    self.size, self.length, self.vocab, self.seed = size, length, vocab, seed

  def __len__(self):
    return self.size

  def __getitem__(self, i):
    rng = np.random.default_rng([self.seed, int(i)])
    tokens = rng.integers(0, self.vocab, self.length, dtype=np.int32)
    return {"tokens": tokens, "target": np.sort(tokens).astype(np.int32)}


def make_iterator(source, *, global_batch: int, seed: int):
  """Shuffled, repeated, per-process slice of the source; yields host-local batches (numpy dicts)."""
  n_proc, idx = jax.process_count(), jax.process_index()
  if global_batch % n_proc:
    raise ValueError(f"global batch {global_batch} is not divisible by {n_proc} processes")
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  ds = ds[idx::n_proc] if n_proc > 1 else ds
  return iter(ds.batch(global_batch // n_proc, drop_remainder=True).to_iter_dataset())
