"""Dense and Embed layers with logical-axis annotations (and optional LoRA on Dense).

Dense: kernel [in, out] (transposed w.r.t. torch.nn.Linear.weight [out, in]); bias [out].
Embed: embedding [vocab, embed]; `attend(x)` gives logits against the table (tied output head).
Parameters are created in `param_dtype` (float32 by default) and cast to `dtype` for compute.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from shared.nn.lora import LoraConfig

Dtype = Any
default_kernel_init = nn.initializers.normal(stddev=0.02)


class Dense(nn.Module):
  """y = x @ kernel + bias (+ LoRA: dropout(x) @ lora_a @ lora_b * alpha / rank).

  x [..., in] -> y [..., features]. `kernel_axes` are the logical names of (in, out).
  `lora`: if given and this module's name is one of `lora.targets`, a low-rank update is added;
  lora_a [in, rank] starts random, lora_b [rank, out] starts at zero (so the model is unchanged).
  """
  features: int
  use_bias: bool = False
  kernel_axes: Sequence[str | None] = ("embed", "mlp")
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable = default_kernel_init
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    in_features = x.shape[-1]
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, tuple(self.kernel_axes)),
                        (in_features, self.features), self.param_dtype)
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (self.kernel_axes[-1],)),
                        (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    if self.lora is not None and self.lora.applies_to(self.name):
      a = self.param("lora_a", nn.with_logical_partitioning(
          nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"), (self.kernel_axes[0], "lora_rank")),
                     (in_features, self.lora.rank), self.param_dtype)
      b = self.param("lora_b", nn.with_logical_partitioning(nn.initializers.zeros, ("lora_rank", self.kernel_axes[-1])),
                     (self.lora.rank, self.features), self.param_dtype)
      h = x.astype(self.dtype)
      if self.lora.dropout > 0.0:
        h = nn.Dropout(self.lora.dropout)(h, deterministic=deterministic)
      y = y + (h @ a.astype(self.dtype)) @ b.astype(self.dtype) * jnp.asarray(self.lora.scale, self.dtype)
    return y


class Embed(nn.Module):
  """ids [...] int -> [..., features]; `attend(x [..., features]) -> [..., num_embeddings]`."""
  num_embeddings: int
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  embedding_axes: Sequence[str | None] = ("vocab", "embed")
  embedding_init: Callable = default_kernel_init

  def setup(self):
    self.embedding = self.param("embedding", nn.with_logical_partitioning(self.embedding_init,
                                                                          tuple(self.embedding_axes)),
                                (self.num_embeddings, self.features), self.param_dtype)

  def __call__(self, ids):
    return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

  def attend(self, x):
    return jnp.dot(x.astype(self.dtype), self.embedding.astype(self.dtype).T)
