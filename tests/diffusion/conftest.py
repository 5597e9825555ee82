"""A small deterministic model function, identical in JAX and torch, for sampler parity tests."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

SHAPE = (2, 6, 4)  # [B, L, C]


class LinearModel:
  """f(x, t) = x W + b cos(3t / 1000) + c sin(t / 250): a linear map of x plus a function of t."""

  def __init__(self, seed: int = 0):
    r = np.random.RandomState(seed)
    c = SHAPE[-1]
    self.w = (0.4 * r.randn(c, c) / np.sqrt(c)).astype(np.float32)
    self.b = r.randn(c).astype(np.float32)
    self.c = (0.5 * r.randn(c)).astype(np.float32)

  def jax(self, x, t):
    t = jnp.asarray(t, jnp.float32)
    return x @ jnp.asarray(self.w) + jnp.asarray(self.b) * jnp.cos(3.0 * t / 1000.0) + (
        jnp.asarray(self.c) * jnp.sin(t / 250.0))

  def torch(self, x, t):
    t = torch.as_tensor(t).to(torch.float32)
    return x @ torch.from_numpy(self.w) + torch.from_numpy(self.b) * torch.cos(3.0 * t / 1000.0) + (
        torch.from_numpy(self.c) * torch.sin(t / 250.0))


@pytest.fixture(scope="module")
def model():
  return LinearModel()


@pytest.fixture(scope="module")
def noise():
  return np.random.RandomState(1).randn(*SHAPE).astype(np.float32)
