"""`python -m examples.sort --config configs/demo/tiny.py --workdir DIR`: a tiny Transformer learns to sort.

The trainer's test fixture: a job small enough for a CPU test that exercises `shared.train` end to end
(sharding, resume, frozen masks, NaN guard). Data: item i of SortSource is {'tokens': [L] int32 random,
'target': [L] int32 the same tokens sorted}, a pure function of (seed, i). Loss: summed token
cross-entropy, aux["weight"] = the number of tokens.
"""
from __future__ import annotations

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax

from shared import cli, config as config_lib, kernels, train as train_lib
from shared.nn.remat import remat


# --------------------------------------------------------------------------- data

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


# --------------------------------------------------------------------------- model

def _param(mod, name, shape, axes, init=nn.initializers.lecun_normal()):
  return mod.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


class Block(nn.Module):
  """Pre-norm Transformer encoder block (also the CSR example's)."""
  dim: int
  heads: int
  mlp: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, _=None):
    """x [B, L, D] -> [B, L, D]."""
    b, l, d = x.shape
    hd = d // self.heads
    ln = lambda name: nn.LayerNorm(name=name, dtype=jnp.float32, param_dtype=jnp.float32,
                                   scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))
    h = ln("ln1")(x).astype(self.dtype)
    wqkv = _param(self, "qkv", (d, 3, self.heads, hd), ("embed", None, "heads", "kv"))
    qkv = jnp.einsum("bld,dthk->blthk", h, wqkv.astype(self.dtype))
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    a = kernels.attention(q, k, v)
    wo = _param(self, "out", (self.heads, hd, d), ("heads", "kv", "embed"))
    a = jnp.einsum("blhk,hkd->bld", a, wo.astype(self.dtype))
    x = x + a.astype(x.dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    h = ln("ln2")(x).astype(self.dtype)
    h = nn.gelu(h @ _param(self, "fc1", (d, self.mlp), ("embed", "mlp")).astype(self.dtype))
    h = nn.with_logical_constraint(h, ("batch", "length", "act_mlp"))
    x = x + (h @ _param(self, "fc2", (self.mlp, d), ("mlp", "embed")).astype(self.dtype)).astype(x.dtype)
    return x, None


def block_stack(layers: int, remat_policy: str):
  """Block scanned over `layers` (params stacked on the "layers" axis), rematerialised by `remat_policy`."""
  return nn.scan(remat(Block, remat_policy), variable_axes={"params": 0}, split_rngs={"params": True},
                 length=layers, metadata_params={nn.PARTITION_NAME: "layers"})


class SortTransformer(nn.Module):
  """tokens [B, L] int32 -> logits [B, L, vocab] float32."""
  vocab: int
  length: int
  dim: int
  heads: int
  layers: int
  mlp: int
  dtype: jnp.dtype = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, tokens):
    emb = _param(self, "embed", (self.vocab, self.dim), ("vocab", "embed"), nn.initializers.normal(0.02))
    pos = _param(self, "pos", (self.length, self.dim), (None, "embed"), nn.initializers.normal(0.02))
    x = jnp.take(emb, tokens, axis=0) + pos[None, : tokens.shape[1]]
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    x, _ = block_stack(self.layers, self.remat)(self.dim, self.heads, self.mlp, self.dtype, name="blocks")(x, None)
    x = nn.LayerNorm(name="ln_f", dtype=jnp.float32, param_dtype=jnp.float32)(x)
    return jnp.einsum("bld,vd->blv", x, emb, preferred_element_type=jnp.float32)


# --------------------------------------------------------------------------- task

def make_task(cfg, poison_steps=()) -> train_lib.Task:
  """The Task for the demo. poison_steps (tests only): those steps' (1-based) losses are NaN."""
  m = cfg.model
  model = SortTransformer(vocab=m.vocab, length=m.length, dim=m.dim, heads=m.heads, layers=m.layers,
                          mlp=m.mlp, dtype=config_lib.dtype(cfg.trainer.precision.compute_dtype),
                          remat=cfg.trainer.remat)
  source = SortSource(cfg.data.size, m.length, m.vocab, cfg.data.seed)

  def init_params(rng, batch):
    return model.init(rng, jnp.asarray(batch["tokens"]))["params"]

  def loss_fn(params, batch, rng):
    del rng
    logits = model.apply({"params": params}, batch["tokens"])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["target"])
    loss_sum = jnp.sum(ce)
    if "poison" in batch:
      loss_sum = loss_sum * jnp.where(jnp.any(batch["poison"] > 0), jnp.nan, 1.0)
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["target"])
    return loss_sum, {"weight": jnp.asarray(ce.size, jnp.float32), "accuracy": acc}

  def make_iter():
    it = make_iterator(source, global_batch=cfg.trainer.batch_size, seed=cfg.trainer.seed)
    return _Poisoned(it, poison_steps) if poison_steps else it

  held = SortSource(256, m.length, m.vocab, cfg.data.seed + 1000)   # held out: another seed's sequences
  held_batches = [{k: np.stack([held[i][k] for i in range(j, j + 64)]) for k in ("tokens", "target")}
                  for j in range(0, len(held), 64)]

  def held_out_sums(params, batch):
    loss_sum, aux = loss_fn(params, batch, None)
    return loss_sum, aux["weight"]

  def val_loss(variables) -> float:   # the held-out token loss (shared/scaling/validation.py)
    from shared.scaling.validation import mean_loss
    return mean_loss(held_out_sums, variables["params"], held_batches)

  return train_lib.Task(init_params=init_params, loss_fn=loss_fn, make_train_iter=make_iter,
                        tokens_per_example=m.length, val_loss_fn=val_loss)


def scale_config(cfg, width: int):
  """Sweep size rule (shared/scaling): dim = width, heads of 16, mlp 2 x width, depth width / 32 (at least 1),
  learning rate x (config dim / width). In place; returns cfg."""
  base = cfg.model.dim
  cfg.model.update(dict(dim=width, heads=max(1, width // 16), mlp=2 * width, layers=max(1, width // 32)))
  cfg.trainer.optimizer.learning_rate = float(cfg.trainer.optimizer.learning_rate) * base / width
  return cfg


class _Poisoned:
  """Adds batch['poison'] (1 on the given 1-based steps) to inject a non-finite loss."""

  def __init__(self, it, steps):
    self.it, self.steps, self.i = it, frozenset(steps), 0

  def __iter__(self):
    return self

  def get_state(self):
    return {"inner": self.it.get_state(), "i": self.i}

  def set_state(self, state):
    self.it.set_state(state["inner"])
    self.i = state["i"]

  def __next__(self):
    b = dict(next(self.it))
    self.i += 1
    b["poison"] = np.full((b["tokens"].shape[0],), int(self.i in self.steps), np.int32)
    return b


def main():
  cfg = cli.train_config()
  cli.start_distributed()
  result = train_lib.train(cfg, make_task(cfg), cli.FLAGS.workdir)
  print(f"{result.status} at step {result.step} (workdir {cli.FLAGS.workdir})", flush=True)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
