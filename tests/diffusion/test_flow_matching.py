"""Flow-matching path, target sign, timestep sampling and masked loss."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from shared.diffusion import flow_matching as fm
from shared.errors import ConfigError


def test_interpolation_equals_diffusers_scale_noise():
  ref = FlowMatchEulerDiscreteScheduler(shift=5.0)
  ref.set_timesteps(10)
  r = np.random.RandomState(0)
  x0, eps = r.randn(3, 4, 2).astype(np.float32), r.randn(3, 4, 2).astype(np.float32)
  t = ref.timesteps[[0, 4, 9]]
  want = ref.scale_noise(torch.from_numpy(x0), t, torch.from_numpy(eps)).numpy()
  sigma = ref.sigmas[[0, 4, 9]].numpy()
  got = fm.interpolate(jnp.asarray(x0), jnp.asarray(eps), jnp.asarray(sigma))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)
  np.testing.assert_allclose(np.asarray(fm.sigma_to_timestep(sigma)), t.numpy(), rtol=1e-6)


def test_target_is_path_derivative():
  """v = d x_σ / dσ = ε - x0 (the flow-prediction sign diffusers' Euler step integrates)."""
  r = np.random.RandomState(1)
  x0, eps = jnp.asarray(r.randn(2, 3, 4), jnp.float32), jnp.asarray(r.randn(2, 3, 4), jnp.float32)
  sigma = jnp.asarray([0.3, 0.8])
  _, dx = jax.jvp(lambda s: fm.interpolate(x0, eps, s), (sigma,), (jnp.ones_like(sigma),))
  np.testing.assert_allclose(np.asarray(dx), np.asarray(fm.velocity_target(x0, eps)), atol=1e-6)


def test_optimal_constant_predictor_is_mean_target_over_counted_tokens():
  """Gradient check on a trivial model: argmin_c loss(c) = E[ε - x0] over tokens with weight 1."""
  r = np.random.RandomState(2)
  b, l, c = 4, 6, 3
  x0 = jnp.asarray(r.randn(b, l, c) + 2.0, jnp.float32)
  eps = jnp.asarray(r.randn(b, l, c), jnp.float32)
  clean = jnp.asarray(r.rand(b, l) < 0.4)
  weights = jnp.logical_not(clean).astype(jnp.float32)

  def loss(const):
    pred = jnp.broadcast_to(const, x0.shape)
    return fm.flow_matching_loss(pred, x0, eps, weights)

  target = np.asarray(eps - x0)
  w = np.asarray(weights)
  best = (target * w[..., None]).sum((0, 1)) / w.sum()
  grad = jax.jit(jax.grad(loss))
  g_best = grad(jnp.asarray(best))
  np.testing.assert_allclose(np.asarray(g_best), 0.0, atol=1e-6)
  # Gradient descent from 0 converges there; the all-token mean is not a stationary point.
  const = jnp.zeros((c,))
  for _ in range(3):
    const = const - 0.5 * c * grad(const)
  np.testing.assert_allclose(np.asarray(const), best, atol=1e-5)
  assert np.all(best < -1.0)  # E[ε - x0] ≈ -2: the sign of the target
  unmasked = target.mean((0, 1))
  assert np.abs(np.asarray(grad(jnp.asarray(unmasked)))).max() > 1e-3


def test_clean_tokens_do_not_count_and_stay_clean():
  r = np.random.RandomState(3)
  x0 = jnp.asarray(r.randn(2, 5, 3), jnp.float32)
  clean = jnp.asarray([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], bool)
  inp = jax.jit(lambda k, x, m: fm.flow_matching_inputs(k, x, clean_mask=m, shift=5.0))(
      jax.random.PRNGKey(0), x0, clean)
  loss = jax.jit(fm.flow_matching_loss)
  np.testing.assert_array_equal(np.asarray(inp["x_t"])[np.asarray(clean)],
                                np.asarray(x0)[np.asarray(clean)])
  np.testing.assert_array_equal(np.asarray(inp["t"])[np.asarray(clean)], 0.0)
  assert np.all(np.asarray(inp["t"])[~np.asarray(clean)] > 0)
  pred = r.randn(2, 5, 3).astype(np.float32)
  base = loss(pred, x0, inp["noise"], inp["weights"])
  pred2 = pred.copy()
  pred2[np.asarray(clean)] += 100.0  # garbage on clean tokens changes nothing
  np.testing.assert_allclose(loss(pred2, x0, inp["noise"], inp["weights"]),
                             base, rtol=1e-6)
  pred3 = pred.copy()
  pred3[0, 3] += 1.0
  assert float(loss(pred3, x0, inp["noise"], inp["weights"])) != float(base)
  with pytest.raises(ConfigError, match="prefix"):
    fm.weighted_mse(pred, pred, jnp.ones((5,)))


def test_shift_and_sigma_sampling():
  s = jnp.linspace(0, 1, 11)
  np.testing.assert_allclose(np.asarray(fm.shift_sigma(s, 1.0)), np.asarray(s), atol=1e-7)
  sh = np.asarray(fm.shift_sigma(s, 5.0))
  assert sh[0] == 0 and abs(sh[-1] - 1) < 1e-6 and np.all(sh >= np.asarray(s))
  np.testing.assert_allclose(sh[5], 5 * 0.5 / (1 + 4 * 0.5), rtol=1e-6)
  key = jax.random.PRNGKey(0)
  u = np.asarray(fm.sample_sigma(key, (20000,)))
  assert u.dtype == np.float32 and 0 <= u.min() and u.max() <= 1 and abs(u.mean() - 0.5) < 0.01
  ln = np.asarray(fm.sample_sigma(key, (20000,), method="logit_normal", logit_std=1.0))
  logit = np.log(ln / (1 - ln))
  assert abs(logit.mean()) < 0.03 and abs(logit.std() - 1.0) < 0.03
  shifted = np.asarray(fm.sample_sigma(key, (20000,), shift=5.0))
  # P(σ' ≤ 0.5) = P(σ ≤ 1/6) for shift 5.
  assert abs((shifted <= 0.5).mean() - 1 / 6) < 0.01
  with pytest.raises(ConfigError, match="logit_normal"):
    fm.sample_sigma(key, (2,), method="beta")
