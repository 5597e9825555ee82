"""`python -m shared.demo.train --config configs/demo/tiny.py --workdir DIR`: the trainer's demo job."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from shared import cli, config as config_lib, train as train_lib
from shared.demo.data import SortSource, make_iterator
from shared.demo.model import SortTransformer


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
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["target"])
    loss = jnp.mean(ce)
    if "poison" in batch:
      loss = loss * jnp.where(jnp.any(batch["poison"] > 0), jnp.nan, 1.0)
    return loss, {"accuracy": acc}

  def make_iter():
    it = make_iterator(source, global_batch=cfg.trainer.batch_size, seed=cfg.trainer.seed)
    return _Poisoned(it, poison_steps) if poison_steps else it

  return train_lib.Task(init_params=init_params, loss_fn=loss_fn, make_train_iter=make_iter,
                        tokens_per_example=m.length)


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
    import numpy as np
    b = dict(next(self.it))
    self.i += 1
    b["poison"] = np.full((b["tokens"].shape[0],), int(self.i in self.steps), np.int32)
    return b


def main():
  cfg = cli.FLAGS.config
  cli.start_distributed()
  result = train_lib.train(cfg, make_task(cfg), cli.FLAGS.workdir)
  print(f"{result.status} at step {result.step} (workdir {cli.FLAGS.workdir})", flush=True)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
