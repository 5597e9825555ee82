"""Conditional flow matching on the linear (rectified-flow) path, in the diffusers / Wan convention.

Convention (the one `FlowMatchEulerDiscreteScheduler.scale_noise` and Wan use):

  x_σ = (1 - σ) x0 + σ ε,     σ ∈ [0, 1]: σ = 1 is pure noise, σ = 0 is data,
  v   = d x_σ / dσ = ε - x0   the model's "flow prediction" target,
  t   = σ · num_train_timesteps   the timestep the network is given (1000 → 0 while sampling).

Sampling runs σ from 1 down to 0 with x ← x + (σ_next - σ) v, so integrating the exact velocity
from x = ε lands on x0 (checked in tests/diffusion/test_flow_matching.py).

Training σ are drawn uniformly or logit-normally (SD3), then optionally shifted with
σ' = shift σ / (1 + (shift - 1) σ) (shift > 1 spends more time at high noise; Wan uses 5.0).

Per-token σ: conditioning tokens that are given clean (a first frame, a given video in TV2A) get
σ = 0 (`per_token_sigma`), so x_σ equals x0 there, and `flow_matching_loss` takes per-token weights
so those tokens do not count.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from shared.errors import ConfigError

Array = jax.Array


def shift_sigma(sigma: Array, shift: float) -> Array:
  """σ' = shift σ / (1 + (shift - 1) σ); identity for shift = 1. Keeps 0 → 0 and 1 → 1."""
  if shift <= 0:
    raise ConfigError(f"flow shift must be > 0, got {shift}")
  sigma = jnp.asarray(sigma)
  return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def sample_sigma(
    rng: Array,
    shape: tuple[int, ...],
    *,
    method: str = "uniform",
    shift: float = 1.0,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    sigma_min: float = 0.0,
    sigma_max: float = 1.0,
) -> Array:
  """Training noise levels σ ∈ [sigma_min, sigma_max], float32 of `shape` (e.g. [B]).

  method: "uniform" (σ ~ U(0, 1)) or "logit_normal" (σ = sigmoid(mean + std·n), n ~ N(0, 1)).
  The result is then shifted with `shift_sigma(·, shift)` and mapped affinely into
  [sigma_min, sigma_max] (useful to keep σ away from exactly 0 or 1).
  """
  if method == "uniform":
    u = jax.random.uniform(rng, shape, jnp.float32)
  elif method == "logit_normal":
    u = jax.nn.sigmoid(logit_mean + logit_std * jax.random.normal(rng, shape, jnp.float32))
  else:
    raise ConfigError(
        f"timestep sampling method must be 'uniform' or 'logit_normal', got {method!r}")
  s = shift_sigma(u, shift)
  return (sigma_min + (sigma_max - sigma_min) * s).astype(jnp.float32)


def sigma_to_timestep(sigma: Array, num_train_timesteps: int = 1000) -> Array:
  """The timestep fed to the network: t = σ · num_train_timesteps (float32)."""
  return (jnp.asarray(sigma, jnp.float32) * num_train_timesteps).astype(jnp.float32)


def per_token_sigma(sigma: Array, clean_mask: Array) -> Array:
  """σ per token: [B] σ and a [B, L] mask (True = given clean) → [B, L] with 0 where clean."""
  sigma = jnp.asarray(sigma, jnp.float32)
  return jnp.where(clean_mask, 0.0, sigma[:, None]).astype(jnp.float32)


def _expand(a: Array, ndim: int) -> Array:
  """Appends trailing singleton axes so `a` broadcasts against an array of rank `ndim`."""
  a = jnp.asarray(a)
  return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def interpolate(x0: Array, noise: Array, sigma: Array) -> Array:
  """x_σ = (1 - σ) x0 + σ ε. σ is [B] or per token [B, L] (leading dims of x0) or a scalar."""
  s = _expand(sigma, x0.ndim).astype(jnp.float32)
  return ((1.0 - s) * x0.astype(jnp.float32) + s * noise.astype(jnp.float32)).astype(x0.dtype)


def velocity_target(x0: Array, noise: Array) -> Array:
  """The flow-prediction target v = ε - x0 (float32)."""
  return noise.astype(jnp.float32) - x0.astype(jnp.float32)


def weighted_mse(pred: Array, target: Array, weights: Array | None = None) -> Array:
  """Weighted mean squared error in float32.

  pred/target: [B, L, ...]. weights: None (plain mean) or an array whose shape is a prefix of
  pred's (e.g. [B] or [B, L]; 0 = ignore, e.g. clean conditioning tokens or padding). The squared
  error is averaged over the remaining trailing axes, then weight-averaged:
  Σ w · mse / max(Σ w, tiny). All-zero weights give 0.
  """
  err = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
  if weights is None:
    return jnp.mean(err)
  w = jnp.asarray(weights, jnp.float32)
  if w.shape != err.shape[:w.ndim]:
    raise ConfigError(
        f"loss weights of shape {w.shape} must be a prefix of the prediction's shape {err.shape}")
  per = jnp.mean(err, axis=tuple(range(w.ndim, err.ndim))) if err.ndim > w.ndim else err
  return jnp.sum(w * per) / jnp.maximum(jnp.sum(w), jnp.finfo(jnp.float32).tiny)


def flow_matching_loss(pred: Array, x0: Array, noise: Array, weights: Array | None = None) -> Array:
  """Mean squared error between the model's velocity `pred` and ε - x0 (float32 scalar).

  weights: see `weighted_mse`; pass the not-clean (and not-padding) token mask so conditioning
  tokens kept clean do not count.
  """
  return weighted_mse(pred, velocity_target(x0, noise), weights)


def flow_matching_inputs(
    rng: Array,
    x0: Array,
    *,
    clean_mask: Array | None = None,
    method: str = "uniform",
    shift: float = 1.0,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    num_train_timesteps: int = 1000,
) -> dict[str, Array]:
  """Everything a training step needs for x0 [B, L, ...]: one σ per example, per token when
  `clean_mask` [B, L] (True = given clean) is passed.

  Returns dict: x_t (noised input), t (network timesteps, [B] or [B, L]), sigma, noise, target
  (ε - x0, float32) and weights ([B, L] float32: 1 for tokens that count, 0 for clean ones; None
  without a mask).
  """
  k_sigma, k_noise = jax.random.split(rng)
  b = x0.shape[0]
  sigma = sample_sigma(k_sigma, (b,), method=method, shift=shift, logit_mean=logit_mean,
                       logit_std=logit_std)
  weights = None
  if clean_mask is not None:
    sigma = per_token_sigma(sigma, clean_mask)
    weights = jnp.logical_not(clean_mask).astype(jnp.float32)
  noise = jax.random.normal(k_noise, x0.shape, jnp.float32).astype(x0.dtype)
  return dict(
      x_t=interpolate(x0, noise, sigma),
      t=sigma_to_timestep(sigma, num_train_timesteps),
      sigma=sigma,
      noise=noise,
      target=velocity_target(x0, noise),
      weights=weights,
  )
