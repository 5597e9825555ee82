"""Small self-contained Tasks for the trainer contract tests (not collected by pytest).

  lm_task(cfg)   per-token LM cross-entropy over ragged sequences: sum over real tokens, weight = tokens
  ctc_task(cfg)  CTC over ragged frames/labels: sum over utterances, weight = labels
  bn_task(cfg)   a BatchNorm regressor (mutable batch_stats): sum of squared errors, weight = examples
Each batch is a pure function of (seed, step), so runs are comparable whatever the device count.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from shared import train as train_lib
from shared.config import trainer_config

VOCAB, LENGTH, FRAMES, LABELS = 11, 12, 16, 5


def config(batch_size=16, total_steps=3) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.trainer = trainer_config()
  c.trainer.update(dict(total_steps=total_steps, batch_size=batch_size, log_every=1, seed=0))
  c.trainer.optimizer.update(dict(name="sgd", learning_rate=0.5, b1=0.0, grad_clip_norm=0.0))
  c.trainer.schedule.name = "constant"
  c.trainer.precision.compute_dtype = "float32"
  c.trainer.checkpoint.update(dict(every_steps=0, async_save=False))
  return c


class _Iter:
  """Deterministic batches: batch i from rng (seed, i); checkpointable (get_state/set_state)."""

  def __init__(self, make, batch_size, seed=0):
    self.make, self.batch_size, self.seed, self.i = make, batch_size, seed, 0

  def __iter__(self):
    return self

  def __next__(self):
    b = self.make(np.random.default_rng((self.seed, self.i)), self.batch_size)
    self.i += 1
    return b

  def get_state(self):
    return {"i": self.i}

  def set_state(self, state):
    self.i = int(state["i"])


def ragged_lengths(rng, b, low, high):
  """Very uneven lengths: half the examples short, half long (micro-batches differ in their counts)."""
  n = rng.integers(low, high + 1, size=b)
  n[: b // 2] = rng.integers(low, low + 2, size=b // 2)
  return n.astype(np.int32)


class TinyLM(nn.Module):
  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(VOCAB, 16)(tokens)
    x = x + nn.Dense(16)(jnp.cumsum(x, axis=1) / (1 + jnp.arange(tokens.shape[1]))[None, :, None])
    return nn.Dense(VOCAB)(jnp.tanh(x))


def lm_task(cfg) -> train_lib.Task:
  model = TinyLM()

  def make(rng, b):
    n = ragged_lengths(rng, b, 2, LENGTH)
    tokens = rng.integers(1, VOCAB, size=(b, LENGTH)).astype(np.int32)
    mask = np.arange(LENGTH)[None] < n[:, None]
    return {"tokens": np.where(mask, tokens, 0), "mask": mask}

  def loss_fn(params, batch, rng):
    del rng
    logits = model.apply({"params": params}, batch["tokens"][:, :-1])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["tokens"][:, 1:])
    m = batch["mask"][:, 1:].astype(jnp.float32)
    return jnp.sum(ce * m), {"weight": jnp.sum(m)}

  return train_lib.Task(init_params=lambda r, b: model.init(r, jnp.asarray(b["tokens"]))["params"],
                        loss_fn=loss_fn, make_train_iter=lambda: _Iter(make, cfg.trainer.batch_size))


def ctc_task(cfg) -> train_lib.Task:
  model = nn.Dense(VOCAB)

  def make(rng, b):
    nf = ragged_lengths(rng, b, 6, FRAMES)
    nl = np.minimum(ragged_lengths(rng, b, 1, LABELS), nf // 2).astype(np.int32)
    x = rng.normal(size=(b, FRAMES, 8)).astype(np.float32)
    labels = rng.integers(1, VOCAB, size=(b, LABELS)).astype(np.int32)
    return {"x": x, "x_mask": np.arange(FRAMES)[None] < nf[:, None],
            "labels": labels, "labels_mask": np.arange(LABELS)[None] < nl[:, None]}

  def loss_fn(params, batch, rng):
    del rng
    logp = jax.nn.log_softmax(model.apply({"params": params}, batch["x"]), -1)
    per = optax.ctc_loss(logp, 1.0 - batch["x_mask"].astype(jnp.float32), batch["labels"],
                         1.0 - batch["labels_mask"].astype(jnp.float32), blank_id=0)
    return jnp.sum(per), {"weight": jnp.sum(batch["labels_mask"].astype(jnp.float32))}

  return train_lib.Task(init_params=lambda r, b: model.init(r, jnp.asarray(b["x"]))["params"],
                        loss_fn=loss_fn, make_train_iter=lambda: _Iter(make, cfg.trainer.batch_size))


class BNNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.Dense(8)(x)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
    return nn.Dense(1)(nn.relu(h))[..., 0]


def bn_task(cfg) -> train_lib.Task:
  model = BNNet()

  def make(rng, b):
    x = (rng.normal(size=(b, 4)) * np.array([1.0, 3.0, 0.5, 2.0]) + 1.5).astype(np.float32)
    return {"x": x, "y": np.sin(x).sum(-1).astype(np.float32)}

  def loss_fn(params, batch, rng, model_state):
    del rng
    y, new = model.apply({"params": params, **model_state}, batch["x"], train=True, mutable=["batch_stats"])
    return jnp.sum((y - batch["y"]) ** 2), {"weight": jnp.float32(batch["y"].shape[0])}, new

  task = train_lib.Task(init_params=lambda r, b: model.init(r, jnp.asarray(b["x"]), train=False),
                        loss_fn=loss_fn, make_train_iter=lambda: _Iter(make, cfg.trainer.batch_size),
                        mutable=("batch_stats",))
  task.model = model
  return task
