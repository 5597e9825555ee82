"""Analytic FLOPs of a program: the matmuls and convolutions it states, counted from its jaxpr.

`program_flops(fn, *args)` traces `fn` (no compilation, no computation: shapes only) and sums
  dot_general             2 x (lhs elements) x (rhs free elements)          (batch x M x K x N x 2)
  conv_general_dilated    2 x (output elements) x (kernel elements / output channels)
over every equation, entering sub-programs: `scan` bodies count `length` times, `cond` counts its most
expensive branch, remat / pjit / custom_vjp / shard_map bodies once (no recomputation: the count is the
model's arithmetic, not what a remat policy makes the hardware do), `while` bodies once (trip count unknown:
listed in `Count.unknown`). Attention is counted as the einsums / matmuls it is written as (QK^T and PV:
4 x B x H x Lq x Lk x D); element-wise work (softmax, norms, activations) is not counted, as in Kaplan /
Chinchilla's 6ND accounting. A Pallas kernel's body is not counted (listed in `unknown`).

`train_step_flops(loss_fn, params, batch, rng)` = 3 x forward (backward = 2 x forward for matmuls: the
gradients w.r.t. inputs and w.r.t. weights), the convention MFU figures use. Frozen parameters still count
their weight-gradient matmuls here (an over-count of at most 1/3 of their share), stated in reports.

The sweep (shared/scaling/sweep.py) turns a compute budget into steps with it; `python -m shared.scaling flops`
reports it beside XLA's cost analysis of the compiled train step (their ratio, per config). XLA's cost analysis
counts a while loop's body once (the scanned layers of every model here), so the cross-check compares XLA with
the count whose scan bodies are also taken once (`loops_once`); the full count multiplies them by their length.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
from jax.extend import core as jcore


@dataclasses.dataclass
class Count:
  flops: float = 0.0
  by_primitive: dict = dataclasses.field(default_factory=dict)
  unknown: set = dataclasses.field(default_factory=set)   # primitives whose cost could not be counted

  def add(self, name: str, flops: float):
    self.flops += flops
    self.by_primitive[name] = self.by_primitive.get(name, 0.0) + flops


def _dot_general(eqn) -> float:
  lhs, rhs = (v.aval for v in eqn.invars[:2])
  (_, rc), (_, rb) = eqn.params["dimension_numbers"]
  free = math.prod(d for i, d in enumerate(rhs.shape) if i not in rc and i not in rb)
  return 2.0 * math.prod(lhs.shape) * free


def _conv(eqn) -> float:
  rhs = eqn.invars[1].aval
  out = eqn.outvars[0].aval
  out_dim = eqn.params["dimension_numbers"].rhs_spec[0]
  return 2.0 * math.prod(out.shape) * math.prod(rhs.shape) / rhs.shape[out_dim]


def _sub(jaxpr) -> jcore.Jaxpr:
  return jaxpr.jaxpr if isinstance(jaxpr, jcore.ClosedJaxpr) else jaxpr


def _walk(jaxpr: jcore.Jaxpr, count: Count, scale: float, loops_once: bool = False) -> None:
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      count.add(name, scale * _dot_general(eqn))
    elif name == "conv_general_dilated":
      count.add(name, scale * _conv(eqn))
    elif name == "scan":
      _walk(_sub(eqn.params["jaxpr"]), count, scale * (1 if loops_once else eqn.params["length"]), loops_once)
    elif name == "cond":
      costs = []
      for branch in eqn.params["branches"]:
        c = Count()
        _walk(_sub(branch), c, scale, loops_once)
        costs.append(c)
      best = max(costs, key=lambda c: c.flops)
      for k, v in best.by_primitive.items():
        count.add(k, v)
      for c in costs:
        count.unknown |= c.unknown
    elif name == "pallas_call":
      count.unknown.add(name)
    else:
      if name == "while":
        count.unknown.add("while (body counted once)")
      for sub in jcore.jaxprs_in_params(eqn.params):
        _walk(_sub(sub), count, scale, loops_once)


def program_flops(fn: Callable, *args: Any, loops_once: bool = False) -> Count:
  """FLOPs of fn(*args) (args: arrays or jax.ShapeDtypeStruct), counted from its jaxpr. -> Count.
  loops_once: count scan bodies once, as XLA's cost analysis counts a while loop's body (for cross-checks)."""
  closed = jax.make_jaxpr(fn)(*args)
  count = Count()
  _walk(closed.jaxpr, count, 1.0, loops_once)
  return count


def train_step_flops(loss_fn: Callable, params: Any, batch: Any, rng: Any) -> float:
  """Analytic FLOPs of one training step on `batch` (global): 3 x the forward matmuls of loss_fn."""
  return 3.0 * program_flops(lambda p, b, r: loss_fn(p, b, r)[0], params, batch, rng).flops


def task_flops(cfg, task, batch_spec: dict | None = None) -> dict:
  """Analytic FLOPs of a Task's train step at cfg.trainer.batch_size, from abstract parameters (nothing is
  materialised): on `batch_spec` ({name: ShapeDtypeStruct}, the global batch: no data is read) or else on the
  task's example batch. -> {"flops_per_step", "flops_forward", "flops_per_step_loops_once", "params", "unknown"}."""
  import flax.linen as nn
  import numpy as np

  from shared import mesh as mesh_lib
  from shared.train import flat
  if batch_spec is not None:
    batch = batch_spec
    init_batch = {k: np.zeros((1,) + tuple(s.shape[1:]), s.dtype) for k, s in batch_spec.items()}
  else:
    batch = task.example_batch
    if batch is None:
      batch = next(iter(task.make_train_iter()))
    init_batch = batch
  rules = mesh_lib.rules_from_config(cfg.trainer)

  def init(r):
    with nn.logical_axis_rules(rules):
      return nn.meta.unbox(task.init_params(r, init_batch))
  variables = jax.eval_shape(init, jax.random.key(0))
  params = variables["params"] if task.mutable else variables
  n = int(sum(int(np.prod(x.shape)) for x in flat(params).values()))
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)

  b_abs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype if hasattr(x, "dtype")
                                                      else np.asarray(x).dtype), batch)
  if task.mutable:   # model state (BatchNorm statistics) is traced like the parameters: shapes only
    state = {c: variables[c] for c in task.mutable}
    fwd = lambda p, b, r, s: task.loss_fn(p, b, r, s)[0]
    args = (params, b_abs, rng, state)
  else:
    fwd = lambda p, b, r: task.loss_fn(p, b, r)[0]
    args = (params, b_abs, rng)
  count = program_flops(fwd, *args)
  once = program_flops(fwd, *args, loops_once=True)
  return {"flops_per_step": 3.0 * count.flops, "flops_forward": count.flops, "params": n,
          "flops_per_step_loops_once": 3.0 * once.flops, "unknown": sorted(count.unknown)}
