"""A validation loss fit for scaling studies: low variance, the same for every run of a sweep.

A run's training loss is a noisy estimate (random timesteps, noise, tasks, examples) and a sweep compares runs
whose differences are a few percent. The `Task.val_loss_fn(variables) -> float` hook (shared/train.py) gives
instead:
  diffusion / flow-matching systems   the loss of one fixed task on a fixed held-out set, at a fixed grid of
                                      noise levels, with fixed noise per (example, level): every evaluation
                                      of every run sees exactly the same inputs (`grid_loss`)
  recognisers                         the held-out token loss on a fixed set (`mean_loss` over fixed batches)
The helpers below hold the shared part; the system writes `loss_at` (its own loss at one noise level).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def sigma_grid(n: int) -> np.ndarray:
  """n noise levels at the midpoints of n equal bins of (0, 1): [n] float32."""
  return ((np.arange(n) + 0.5) / n).astype(np.float32)


def fixed_batches(examples: Sequence[dict], collate: Callable[[list], dict], batch_size: int) -> list[dict]:
  """The held-out set as batches (the last one may be smaller) of device arrays: built and copied once, reused
  by every evaluation."""
  return [{k: jnp.asarray(v) for k, v in collate(list(examples[i:i + batch_size])).items()}
          for i in range(0, len(examples), batch_size)]


def mean_loss(loss_fn: Callable, params: Any, batches: Iterable[dict]) -> float:
  """Σ loss_sum / Σ weight over fixed batches; loss_fn(params, batch) -> (loss_sum, weight), jitted once."""
  fn = jax.jit(loss_fn)
  total = weight = 0.0
  for b in batches:
    s, w = fn(params, {k: jnp.asarray(v) for k, v in b.items()})
    total, weight = total + float(s), weight + float(w)
  return total / max(weight, 1e-12)


def grid_loss(loss_at: Callable, params: Any, batches: Sequence[dict], sigmas: np.ndarray, seed: int = 0) -> float:
  """Mean over (batch, σ) of loss_at(params, batch, σ [B], key) -> (loss_sum, weight).

  The noise key of batch i at level j is fold_in(fold_in(key(seed), i), j): the same in every evaluation and
  every run. One compiled function for all levels (σ is an argument, the loop is over the eval grid, not over
  tokens or frames)."""
  fn = jax.jit(loss_at)
  base = jax.random.key(seed)
  total = weight = 0.0
  for i, b in enumerate(batches):
    b = {k: jnp.asarray(v) for k, v in b.items()}
    n = next(iter(b.values())).shape[0]
    for j, s in enumerate(sigmas):
      key = jax.random.fold_in(jax.random.fold_in(base, i), j)
      ls, w = fn(params, b, jnp.full((n,), s, jnp.float32), key)
      total, weight = total + float(ls), weight + float(w)
  return total / max(weight, 1e-12)
