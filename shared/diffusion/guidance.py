"""Classifier-free guidance with several nested conditions, and condition dropout for training.

Nested guidance (UniTalking: text, then text + reference audio). With predictions
p_0 = f(∅), p_1 = f(c_1), p_2 = f(c_1, c_2), ... and scales s_1, s_2, ...:

  out = p_0 + Σ_i s_i (p_i - p_{i-1})
      = uncond + s_text (text - uncond) + s_ref (text+ref - text)

With one condition this is the usual uncond + s (cond - uncond); s = 1 gives the conditional
prediction. `guided` turns a conditional model `fn(x, t, cond)` into a sampler model function
`fn(x, t)` that evaluates all condition sets in one batched call.

Training: `dropout_masks` draws, per example, which conditions to replace by their null value
(each with its own probability, plus an optional "drop everything" probability), and
`apply_dropout` does the replacement on arrays or pytrees.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from shared.errors import ConfigError

Array = jax.Array


def cfg_combine(preds: Sequence[Array], scales: Sequence[float] | Array) -> Array:
  """p_0 + Σ_i s_i (p_i - p_{i-1}) in float32. preds: [uncond, c1, c1+c2, ...]; len(scales) =
  len(preds) - 1. Scales may be traced (e.g. a per-call guidance scale)."""
  if len(preds) < 2 or len(scales) != len(preds) - 1:
    raise ConfigError(f"cfg_combine needs k+1 predictions for k scales, got {len(preds)} "
                      f"predictions and {len(scales)} scales")
  p = [jnp.asarray(q, jnp.float32) for q in preds]
  out = p[0]
  for i in range(1, len(p)):
    out = out + jnp.asarray(scales[i - 1], jnp.float32) * (p[i] - p[i - 1])
  return out


def cfg(uncond: Array, cond: Array, scale: float | Array) -> Array:
  """Single-condition CFG: uncond + scale (cond - uncond)."""
  return cfg_combine([uncond, cond], [scale])


def guided(fn: Callable[[Array, Array, Any], Array], conds: Sequence[Any],
           scales: Sequence[float] | Array) -> Callable[[Array, Array], Array]:
  """A sampler model function x, t ↦ CFG-combined prediction.

  fn(x, t, cond) -> prediction, batched over x's leading axis. conds: the nested condition sets
  [null, c1, c1+c2, ...] as pytrees of arrays with batch leading axes matching x (same structure
  each). All sets are concatenated along the batch axis and evaluated in one call of fn, then
  split and combined with `cfg_combine`.
  """
  k = len(conds)
  if k - 1 != len(scales):
    raise ConfigError(f"guided: {k} condition sets need {k - 1} scales, got {len(scales)}")

  def model(x: Array, t: Array) -> Array:
    b = x.shape[0]
    xs = jnp.concatenate([x] * k, axis=0)
    cs = jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *conds)
    out = fn(xs, t, cs)
    preds = [out[i * b:(i + 1) * b] for i in range(k)]
    return cfg_combine(preds, scales).astype(out.dtype)

  return model


def dropout_masks(rng: Array, batch: int, probs: Mapping[str, float],
                  p_drop_all: float = 0.0) -> dict[str, Array]:
  """Per-example booleans [B] (True = replace by the null condition), one per named condition.

  Each condition is dropped independently with probs[name]; additionally, with p_drop_all every
  condition is dropped together (the fully unconditional case CFG needs).
  """
  for name, p in list(probs.items()) + [("drop_all", p_drop_all)]:
    if not 0.0 <= p <= 1.0:
      raise ConfigError(f"dropout probability {name!r} must be in [0, 1], got {p}")
  keys = jax.random.split(rng, len(probs) + 1)
  all_drop = jax.random.uniform(keys[0], (batch,)) < p_drop_all
  return {name: jnp.logical_or(jax.random.uniform(k, (batch,)) < p, all_drop)
          for k, (name, p) in zip(keys[1:], sorted(probs.items()))}


def apply_dropout(cond: Any, null: Any, drop: Array) -> Any:
  """Replace examples where drop [B] is True by the null condition (pytrees; null broadcasts,
  e.g. a learned null embedding without batch axis or zeros)."""
  def one(c, n):
    d = drop.reshape(drop.shape + (1,) * (c.ndim - 1))
    return jnp.where(d, jnp.broadcast_to(n, c.shape).astype(c.dtype), c)
  return jax.tree.map(one, cond, null)
