"""Classifier-free guidance combination, batched guided model function, condition dropout."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.diffusion import guidance, samplers
from shared.errors import ConfigError


def test_two_scale_cfg_equals_formula():
  r = np.random.RandomState(0)
  uncond, text, text_ref = (r.randn(2, 5, 3).astype(np.float32) for _ in range(3))
  s_text, s_ref = 5.0, 2.5
  want = uncond + s_text * (text - uncond) + s_ref * (text_ref - text)
  got = guidance.cfg_combine([uncond, text, text_ref], [s_text, s_ref])
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(guidance.cfg(uncond, text, 1.0)), text, atol=1e-6)
  np.testing.assert_allclose(np.asarray(guidance.cfg(uncond, text, 0.0)), uncond, atol=1e-6)
  with pytest.raises(ConfigError, match="scales"):
    guidance.cfg_combine([uncond, text], [1.0, 2.0])


def test_guided_model_batches_conditions_once():
  r = np.random.RandomState(1)
  w = jnp.asarray(r.randn(3, 3), jnp.float32)
  calls = []

  def net(x, t, cond):
    calls.append(x.shape[0])
    return x @ w * cond["text"][:, None, :] + cond["ref"][:, None, :] + t

  b = 2
  null = {"text": jnp.zeros((b, 3)), "ref": jnp.zeros((b, 3))}
  text = {"text": jnp.asarray(r.randn(b, 3), jnp.float32), "ref": jnp.zeros((b, 3))}
  both = {"text": text["text"], "ref": jnp.asarray(r.randn(b, 3), jnp.float32)}
  fn = guidance.guided(net, [null, text, both], [4.0, 1.5])
  x = jnp.asarray(r.randn(b, 5, 3), jnp.float32)
  got = fn(x, jnp.float32(3.0))
  want = guidance.cfg_combine([net(x, 3.0, c) for c in (null, text, both)], [4.0, 1.5])
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  assert calls[0] == 3 * b
  # It plugs into a sampler loop under jit.
  out = jax.jit(lambda x: samplers.euler_sample(fn, x, samplers.euler_plan(4, 5.0)))(x)
  assert out.shape == x.shape and np.all(np.isfinite(np.asarray(out)))


def test_condition_dropout_rates_and_joint_drop():
  key = jax.random.PRNGKey(0)
  n = 40000
  masks = guidance.dropout_masks(key, n, {"text": 0.1, "ref": 0.3}, p_drop_all=0.05)
  text, ref = np.asarray(masks["text"]), np.asarray(masks["ref"])
  # P(drop) = p + p_all - p p_all; joint P(both) = p_all + (1 - p_all) p_t p_r.
  assert abs(text.mean() - (0.1 + 0.05 - 0.005)) < 0.01
  assert abs(ref.mean() - (0.3 + 0.05 - 0.015)) < 0.01
  assert abs((text & ref).mean() - (0.05 + 0.95 * 0.03)) < 0.01
  none = guidance.dropout_masks(key, 100, {"text": 0.0})
  assert not np.asarray(none["text"]).any()
  with pytest.raises(ConfigError, match="probability"):
    guidance.dropout_masks(key, 4, {"text": 1.5})


def test_apply_dropout_on_pytree():
  cond = {"emb": jnp.ones((3, 4, 2)), "mask": jnp.ones((3, 4), bool)}
  null = {"emb": jnp.full((4, 2), -1.0), "mask": jnp.zeros((3, 4), bool)}
  drop = jnp.asarray([True, False, True])
  out = guidance.apply_dropout(cond, null, drop)
  np.testing.assert_array_equal(np.asarray(out["emb"])[:, 0, 0], [-1.0, 1.0, -1.0])
  np.testing.assert_array_equal(np.asarray(out["mask"]).all(1), [False, True, False])
