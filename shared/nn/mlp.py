"""Feed-forward blocks. x [B, L, E] -> [B, L, E].

GatedMLP (LLaMA/Qwen/T5 gated): down_proj(act(gate_proj(x)) * up_proj(x)).
MLP (plain): fc2(act(fc1(x))).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared.nn.linear import Dense
from shared.nn.lora import LoraConfig

Dtype = Any

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def activation(name: str):
  from shared.errors import ConfigError
  if name not in ACTIVATIONS:
    raise ConfigError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class GatedMLP(nn.Module):
  intermediate_size: int
  act: str = "silu"
  use_bias: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, lora=self.lora)
    g = Dense(self.intermediate_size, self.use_bias, ("embed", "mlp"), name="gate_proj", **kw)(x, deterministic)
    u = Dense(self.intermediate_size, self.use_bias, ("embed", "mlp"), name="up_proj", **kw)(x, deterministic)
    h = activation(self.act)(g) * u
    h = nn.with_logical_constraint(h, ("batch", None, "act_mlp"))
    return Dense(x.shape[-1], self.use_bias, ("mlp", "embed"), name="down_proj", **kw)(h, deterministic)


class MLP(nn.Module):
  hidden_size: int
  act: str = "gelu"
  use_bias: bool = True
  out_features: int | None = None
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, lora=self.lora)
    h = Dense(self.hidden_size, self.use_bias, ("embed", "mlp"), name="fc1", **kw)(x, deterministic)
    h = activation(self.act)(h)
    if self.dropout > 0.0:
      h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    return Dense(self.out_features or x.shape[-1], self.use_bias, ("mlp", "embed"), name="fc2", **kw)(h, deterministic)
