"""The one training loop every system uses.

A system hands `train()` a `Task` (pure init/loss functions, a data iterator, optional hooks) and its
config; the loop owns everything else:

- TrainState (params, opt_state, step, rng, non-finite counters), the step jitted with in/out
  shardings from the logical-axis rules and with buffer donation; gradient accumulation by scan.
- Frozen parameters (`Task.trainable`): only trainable leaves are differentiated and updated, and
  only they hold optimizer state; frozen leaves pass through bit-identical.
- NaN/inf guard: a non-finite loss or gradient skips the update (params and optimizer state kept) and
  is counted; `nan_guard.max_consecutive` in a row stop the run with TrainingDiverged, the last good
  checkpoint intact.
- Checkpoints (orbax CheckpointManager under DIR/checkpoints/<step>/): state, data-iterator state,
  resolved config as JSON; keep-last-N; resume from the latest complete one; SIGTERM/SIGINT save and
  return (exit 0 in the entry points) - Cloud TPU preemption.
- Metrics: TensorBoard events in DIR, DIR/metrics.jsonl (one line per log interval), a progress line
  with steps/s and ETA, examples/s, tokens/s, TFLOP/s per device and MFU; an optional profiler window.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from typing import Any, Callable, Iterator, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import traverse_util

from shared import config as config_lib
from shared.checkpoint import Checkpointer, Restored, restore  # noqa: F401  (re-exported)
from shared import mesh as mesh_lib
from shared.errors import ConfigError, StackError

log = logging.getLogger("shared.train")

# bf16 dense peak per device, TFLOP/s (vendor figures); override with trainer.peak_tflops.
PEAK_TFLOPS = {
    "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v5": 459.0,
    "TPU v6 lite": 918.0, "TPU v6e": 918.0, "NVIDIA H200": 989.0, "NVIDIA H100": 989.0,
    "NVIDIA A100": 312.0, "NVIDIA B200": 2250.0, "NVIDIA L4": 121.0,
}


class TrainingDiverged(StackError):
  """Too many consecutive non-finite steps; the last good checkpoint is left intact."""


@dataclasses.dataclass
class Task:
  """What a system gives the trainer.

  init_params(rng, batch) -> params   param tree, leaves boxed with nn.with_logical_partitioning; with
      `mutable` collections: the variables {"params": ..., "batch_stats": ...} (what module.init returns)
  loss_fn(params, batch, rng) -> (loss_sum, aux)   pure, jittable. loss_sum: the loss SUMMED over what it
      counts; aux["weight"]: that count (tokens, labels, frames or examples; float32 scalar); the trainer
      divides once, after summing both over accumulation micro-batches (and, by jit, over data-parallel
      shards), so ragged micro-batches weigh by their counts. Other aux entries: scalar metrics (averaged).
      With `mutable`: loss_fn(params, batch, rng, model_state) -> (loss_sum, aux, new_model_state).
  mutable   model-state collections (e.g. ("batch_stats",)): kept in TrainState.model_state, updated by the
      train step (micro-batches in order), checkpointed, never differentiated
  check_config() -> None   raises ConfigError for a bad setting (sampling, eval, inputs); the trainer calls it
      before any data is built, so config errors come in seconds (a system may also check in make_task)
  make_train_iter() -> iterator of host-local numpy batches (dict name -> [B_local, ...]); a grain
      DatasetIterator (get_state/set_state) makes resume exact and is saved in checkpoints
  example_batch   one host-local batch (shapes for init/compile); peeked from the iterator if None
  trainable(path) -> bool   '/'-joined param path; None = everything trains
  eval_fn(variables, step) -> dict    sample_fn(variables, step, out_dir)    (host-side hooks;
      variables = {"params": params, **model_state}: running statistics in eval)
  val_loss_fn(variables) -> float   a low-variance held-out loss (fixed examples, fixed noise and timesteps or
      the held-out token loss): logged as eval/val_loss with the eval hooks; scaling sweeps read it
      (shared/scaling/validation.py has the fixed-grid helpers)
  tokens_per_example, flops_per_step (analytic, global): throughput figures
  post_init(params) -> params   fresh starts only (never on resume), after the config's `init` entries:
      e.g. pretrained weights into part of the tree; must keep shapes, dtypes and shardings
  """
  init_params: Callable[[jax.Array, Any], Any]
  loss_fn: Callable[..., tuple]
  make_train_iter: Callable[[], Iterator]
  example_batch: Any = None
  trainable: Callable[[str], bool] | None = None
  eval_fn: Callable[[Any, int], dict] | None = None
  sample_fn: Callable[[Any, int, str], None] | None = None
  tokens_per_example: int | None = None
  flops_per_step: float | None = None
  post_init: Callable[[Any], Any] | None = None
  mutable: tuple[str, ...] = ()
  check_config: Callable[[], None] | None = None
  val_loss_fn: Callable[[Any], float] | None = None


@flax.struct.dataclass
class TrainState:
  step: jax.Array            # int32 []
  params: Any                # full param tree (frozen leaves included)
  opt_state: Any             # over the trainable leaves only (flat dict keyed by 'a/b/kernel')
  rng: jax.Array             # uint32 raw key data of the base key; step keys are fold_in(key, step)
  nonfinite_run: jax.Array   # int32 [], consecutive skipped steps
  nonfinite_total: jax.Array  # int32 []
  model_state: Any = flax.struct.field(default_factory=dict)  # {collection: tree}, e.g. batch_stats

  @property
  def variables(self) -> dict:
    return {"params": self.params, **self.model_state}


def flat(tree) -> dict[str, Any]:
  return traverse_util.flatten_dict(tree, sep="/")


def unflat(d: dict[str, Any]):
  return traverse_util.unflatten_dict(d, sep="/")


def split_trainable(params, trainable_keys: frozenset[str]):
  f = flat(params)
  return ({k: v for k, v in f.items() if k in trainable_keys},
          {k: v for k, v in f.items() if k not in trainable_keys})


# --------------------------------------------------------------------------- the step

def make_train_step(task: Task, tx: optax.GradientTransformation, trainable_keys: frozenset[str],
                    accumulate_steps: int, mesh, rules):
  """(state, batch) -> (state, metrics). Pure; jit it with shardings.

  Gradients are those of sum(loss_sum) / sum(weight) over the micro-batches: the sums and the gradient of
  the sums accumulate, one division at the end."""

  def loss_of(train_p, frozen_p, model_state, batch, rng):
    params = unflat({**train_p, **frozen_p})
    if task.mutable:
      loss, aux, new_ms = task.loss_fn(params, batch, rng, model_state)
    else:
      (loss, aux), new_ms = task.loss_fn(params, batch, rng), model_state
    if "weight" not in aux:
      raise ConfigError("Task.loss_fn must return aux['weight']: the count its loss sum is over (tokens, "
                        "labels, frames or examples); the trainer divides by it")
    aux = dict(aux)
    weight = jnp.asarray(aux.pop("weight"), jnp.float32)
    return loss.astype(jnp.float32), (weight, {k: jnp.asarray(v, jnp.float32) for k, v in aux.items()}, new_ms)

  grad_fn = jax.value_and_grad(loss_of, has_aux=True)

  def step_fn(state: TrainState, batch):
    with nn.logical_axis_rules(rules):
      train_p, frozen_p = split_trainable(state.params, trainable_keys)
      rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
      if accumulate_steps == 1:
        (loss, (weight, aux, model_state)), grads = grad_fn(train_p, frozen_p, state.model_state, batch, rng)
      else:
        micro = jax.tree.map(
            lambda x: x.reshape((accumulate_steps, x.shape[0] // accumulate_steps) + x.shape[1:]), batch)

        def body(carry, xs):
          i, mb = xs
          sums, ms = carry
          (l, (w, a, ms)), g = grad_fn(train_p, frozen_p, ms, mb, jax.random.fold_in(rng, i))
          return (jax.tree.map(jnp.add, sums, (l, w, a, g)), ms), None

        aux_shape = jax.eval_shape(loss_of, train_p, frozen_p, state.model_state,
                                   jax.tree.map(lambda x: x[0], micro), rng)[1][1]
        zero = jnp.zeros((), jnp.float32)
        zeros = (zero, zero, jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), aux_shape),
                 jax.tree.map(jnp.zeros_like, train_p))
        ((loss, weight, aux, grads), model_state), _ = jax.lax.scan(
            body, (zeros, state.model_state), (jnp.arange(accumulate_steps), micro))
        aux = jax.tree.map(lambda x: x / accumulate_steps, aux)
      inv = 1.0 / jnp.maximum(weight, 1e-12)
      loss = loss * inv
      grads = jax.tree.map(lambda g: (g * inv).astype(g.dtype), grads)
      grad_norm = optax.global_norm(grads)
      finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
      updates, new_opt = tx.update(grads, state.opt_state, train_p)
      new_train = optax.apply_updates(train_p, updates)
      keep = lambda new, old: jnp.where(finite, new, old)
      new_train = jax.tree.map(keep, new_train, train_p)
      new_opt = jax.tree.map(keep, new_opt, state.opt_state)
      model_state = jax.tree.map(keep, model_state, state.model_state)
      run = jnp.where(finite, 0, state.nonfinite_run + 1).astype(jnp.int32)
      new_state = state.replace(
          step=state.step + 1, params=unflat({**new_train, **frozen_p}), opt_state=new_opt,
          model_state=model_state, nonfinite_run=run,
          nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32))
      metrics = {"loss": loss, "loss_weight": weight, "grad_norm": grad_norm, "nonfinite_run": run,
                 "nonfinite_total": new_state.nonfinite_total,
                 **aux}
      return new_state, metrics

  return step_fn


# --------------------------------------------------------------------------- state & shardings

class MeshJit:
  """A jitted function traced, lowered and called under its mesh (for logical constraints)."""

  def __init__(self, mesh, fn):
    self.mesh, self.fn = mesh, fn

  def __call__(self, *args):
    with jax.set_mesh(self.mesh):
      return self.fn(*args)

  def lower(self, *args):
    with jax.set_mesh(self.mesh):
      return self.fn.lower(*args)


@dataclasses.dataclass
class Setup:
  """Everything built once from (config, task, mesh): the jitted functions and their shardings."""
  mesh: Any
  rules: tuple
  tx: optax.GradientTransformation
  trainable_keys: frozenset
  state_shardings: TrainState
  batch_shardings: Any
  abstract_state: TrainState
  init_fn: Callable[[], TrainState]
  step_fn: Callable      # jitted (state, batch) -> (state, metrics)
  example_batch: Any


def _opt_shardings(abstract_opt, param_sh: dict[str, Any], repl):
  """Optimizer-state leaves whose last key names a parameter take that parameter's sharding."""
  def pick(path, leaf):
    for entry in reversed(path):
      key = getattr(entry, "key", None)
      if isinstance(key, str) and key in param_sh:
        return param_sh[key]
    return repl
  return jax.tree_util.tree_map_with_path(pick, abstract_opt)


def check_batch(t, mesh, rules) -> None:
  """trainer.batch_size against the mesh's batch shards, accumulation and processes (ConfigError)."""
  divisor = mesh_lib.batch_divisor(mesh, rules)
  if t.batch_size % (divisor * t.optimizer.accumulate_steps):
    raise ConfigError(f"trainer.batch_size={t.batch_size} must be a multiple of the batch shards "
                      f"({divisor}) of mesh {dict(mesh.shape)} times trainer.optimizer.accumulate_steps "
                      f"({t.optimizer.accumulate_steps})")
  mesh_lib.local_batch_size(t.batch_size)


def check_workdir(workdir: str) -> None:
  """The workdir exists (created) and is writable; ConfigError naming it otherwise - before any work is done."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"--workdir {workdir} is not writable ({e.strerror or e}): checkpoints, metrics and "
                      f"samples go there") from None


def build(cfg: ml_collections.ConfigDict, task: Task, *, mesh=None, example_batch=None) -> Setup:
  """Mesh, optimizer, shardings, jitted init and step. No computation yet."""
  t = cfg.trainer
  config_lib.validate_trainer(t)
  mesh = mesh if mesh is not None else mesh_lib.make_mesh(t.mesh)
  rules = mesh_lib.rules_from_config(t)
  check_batch(t, mesh, rules)
  example_batch = example_batch if example_batch is not None else task.example_batch
  tx = config_lib.build_optimizer(t)
  rng = jax.random.key(t.seed)

  def init_boxed(r):
    """-> (boxed params, model_state {collection: tree})."""
    with nn.logical_axis_rules(rules):
      out = task.init_params(r, example_batch)
    if not task.mutable:
      return out, {}
    missing = [c for c in ("params", *task.mutable) if c not in out]
    if missing:
      raise ConfigError(f"Task.mutable={task.mutable}: init_params must return the variables dict with "
                        f"{['params', *task.mutable]}; missing {missing}")
    return out["params"], {c: out[c] for c in task.mutable}

  with jax.set_mesh(mesh):
    boxed, boxed_ms = jax.eval_shape(init_boxed, rng)
  logical = nn.get_partition_spec(boxed)
  keep_whole = tuple(t.get("replicate", ()))   # trainer.replicate: those weights data-parallel, not by the rules
  param_sh = mesh_lib.replicate_matching(mesh, mesh_lib.logical_shardings(mesh, rules, logical), keep_whole)
  ms_sh = mesh_lib.replicate_matching(
      mesh, mesh_lib.logical_shardings(mesh, rules, nn.get_partition_spec(boxed_ms)), keep_whole)
  abstract_params = nn.meta.unbox(boxed)
  keys = list(flat(abstract_params))
  trainable_keys = frozenset(k for k in keys if task.trainable is None or task.trainable(k))
  if not trainable_keys:
    raise ConfigError("no trainable parameters: Task.trainable froze every parameter")
  flat_sh = flat(param_sh)
  abstract_train = {k: v for k, v in flat(abstract_params).items() if k in trainable_keys}
  abstract_opt = jax.eval_shape(tx.init, abstract_train)
  repl = mesh_lib.replicated(mesh)
  opt_sh = _opt_shardings(abstract_opt, {k: flat_sh[k] for k in trainable_keys}, repl)
  state_sh = TrainState(step=repl, params=param_sh, opt_state=opt_sh, rng=repl,
                        nonfinite_run=repl, nonfinite_total=repl, model_state=ms_sh)

  def init_state():
    params, model_state = nn.meta.unbox(init_boxed(rng))
    train_p = {k: v for k, v in flat(params).items() if k in trainable_keys}
    z = jnp.zeros((), jnp.int32)
    return TrainState(step=z, params=params, opt_state=tx.init(train_p), rng=jax.random.key_data(rng),
                      nonfinite_run=z, nonfinite_total=z, model_state=model_state)

  with jax.set_mesh(mesh):
    abstract_state = jax.eval_shape(init_state)
  batch_sh = jax.tree.map(lambda x: mesh_lib.batch_sharding(mesh, rules, np.ndim(x)), example_batch)
  step = make_train_step(task, tx, trainable_keys, t.optimizer.accumulate_steps, mesh, rules)
  step_fn = MeshJit(mesh, jax.jit(step, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, repl),
                                   donate_argnums=(0,)))
  init_fn = MeshJit(mesh, jax.jit(init_state, out_shardings=state_sh))
  return Setup(mesh, rules, tx, trainable_keys, state_sh, batch_sh, abstract_state, init_fn, step_fn,
               example_batch)


# --------------------------------------------------------------------------- metrics

class MetricsLog:
  """TensorBoard events in DIR (tensorboardX), DIR/metrics.jsonl, and the progress line.

  metrics.jsonl is strict JSON, one object per line: {"step": N, name: value, ...}; a non-finite value is
  written as null and its name listed under "nonfinite" (e.g. {"loss": null, "nonfinite": ["loss"]})."""

  def __init__(self, workdir: str, enabled: bool):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    if enabled:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(logdir=workdir, flush_secs=30)

  def truncate_after(self, step: int):
    """On resume: drop lines for steps the restored state has not done (after a kill -9)."""
    if not (self.enabled and os.path.exists(self.path)):
      return
    keep = []
    with open(self.path) as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:  # a line torn by the kill: it belongs to the lost steps
          continue
        if row.get("step", 0) <= step:
          keep.append(line if line.endswith("\n") else line + "\n")
    with open(self.path, "w") as f:
      f.writelines(keep)

  def write(self, step: int, scalars: dict[str, float], prefix: str = ""):
    if not self.enabled:
      return
    row = {prefix + k: v for k, v in scalars.items()}
    bad = sorted(k for k, v in row.items() if v is not None and not math.isfinite(v))
    row = {k: (None if k in bad else v) for k, v in row.items()}   # strict JSON: no bare NaN / Infinity
    if bad:
      row["nonfinite"] = bad                                        # which keys were NaN / inf
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, **row}, allow_nan=False) + "\n")
    for k, v in scalars.items():
      if v is not None and np.isfinite(v):
        self.tb.add_scalar(prefix + k, v, step)

  def close(self):
    if self.tb is not None:
      self.tb.close()


def device_peak_tflops(override: float = 0.0) -> float | None:
  if override:
    return float(override)
  kind = jax.devices()[0].device_kind
  for name, peak in PEAK_TFLOPS.items():
    if kind.startswith(name):
      return peak
  return None


def compiled_flops(compiled) -> float | None:
  """FLOPs of one step for one device, from XLA's cost analysis."""
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) or None
  except Exception:  # not every backend reports costs
    return None


def _fmt_time(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# --------------------------------------------------------------------------- the loop

class _Signals:
  """SIGTERM/SIGINT set a flag; the loop saves a checkpoint and returns."""

  def __init__(self):
    self.received = None
    self._old = {}

  def __enter__(self):
    import threading
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def _peek(it):
  if hasattr(it, "get_state"):
    st = it.get_state()
    batch = next(it)
    it.set_state(st)
    return batch
  raise ConfigError("Task.example_batch is required when the data iterator has no get_state()")


@dataclasses.dataclass
class Result:
  state: TrainState
  status: str            # "done" | "preempted"
  step: int
  resumed_from: int | None


class HookFailed(StackError):
  """A sample / eval hook failed with trainer.hooks.on_error="stop" (after that step's checkpoint was saved)."""


def train(cfg: ml_collections.ConfigDict, task: Task, workdir: str, *, mesh=None,
          hooks: Sequence[Callable[[int, TrainState], None]] = ()) -> Result:
  """Trains to cfg.trainer.total_steps, resuming from the newest restorable checkpoint in DIR/checkpoints
  (or trainer.checkpoint.resume_step). Everything a config alone can get wrong (trainer keys, mesh vs devices,
  batch vs shards, the task's own settings, init entries, a read-only workdir) fails before any data is built."""
  t = cfg.trainer
  config_lib.validate_trainer(t)
  mesh = mesh if mesh is not None else mesh_lib.make_mesh(t.mesh)
  check_batch(t, mesh, mesh_lib.rules_from_config(t))
  if task.check_config is not None:
    task.check_config()
  if cfg.get("init"):
    from shared.weights.init import check_init_entries
    check_init_entries(cfg.init)
  check_workdir(workdir)
  lead = jax.process_index() == 0
  data_iter = task.make_train_iter()
  example = task.example_batch if task.example_batch is not None else _peek(data_iter)
  setup = build(cfg, task, mesh=mesh, example_batch=example)
  cfg_json = config_lib.to_json(cfg)
  ckpt = Checkpointer(workdir, keep=t.checkpoint.keep, async_save=t.checkpoint.async_save)
  metrics = MetricsLog(workdir, enabled=lead)
  resumed_from, state = ckpt.restore_newest(setup.abstract_state, setup.state_shardings, data_iter,
                                            step=None if t.checkpoint.resume_step < 0 else t.checkpoint.resume_step)
  if resumed_from is not None:
    metrics.truncate_after(resumed_from)
    log.info("resumed from %s/%d", ckpt.directory, resumed_from)
  else:
    metrics.truncate_after(0)   # lines of a run killed before its first checkpoint describe lost steps
    state = setup.init_fn()
    params, model_state = state.params, state.model_state
    if cfg.get("init"):   # pretrained weights into subtrees, from the config's named entries
      from shared.weights.init import apply_init_entries   # every collection: BatchNorm statistics too
      variables, _ = apply_init_entries(cfg.init, {"params": params, **model_state},
                                        workdir=workdir if lead else None, variables=True)
      params = variables["params"]
      if any(variables[c] is not model_state[c] for c in model_state):
        model_state = type(model_state)({c: variables[c] for c in model_state})
    if task.post_init is not None:
      params = task.post_init(params)
    state = state.replace(params=params, model_state=model_state)
  if lead:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(cfg_json)

  step = int(jax.device_get(state.step))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(setup.abstract_state.params))
  n_train = sum(int(np.prod(x.shape)) for k, x in flat(setup.abstract_state.params).items()
                if k in setup.trainable_keys)
  log.info("params %.2fM (%.2fM trainable), mesh %s, %d devices", n_params / 1e6, n_train / 1e6,
           dict(setup.mesh.shape), jax.device_count())
  peak = device_peak_tflops(t.peak_tflops)
  compiled: dict = {}       # one executable per batch shape (padding buckets give a few)

  def executable(state, batch):
    key = tuple((x.shape, x.dtype.name) for x in jax.tree.leaves(batch))
    if key not in compiled:
      compiled[key] = setup.step_fn.lower(state, batch).compile()
    return compiled[key]

  flops_dev = None
  if step < t.total_steps:  # compile up front: cost analysis for TFLOP/s / MFU
    first = executable(state, mesh_lib.global_batch(example, setup.mesh, setup.rules))
    flops_dev = (task.flops_per_step / jax.device_count()) if task.flops_per_step else compiled_flops(first)
  schedule = config_lib.build_schedule(t)

  pending = None            # (step, metrics) of the previous step, read after the next is dispatched
  window: list[dict] = []
  t_window, steps_window = time.perf_counter(), 0
  t_start, step_start = None, step
  status = "done"
  prof = t.profile

  def flush(step_now: int):
    nonlocal window, t_window, steps_window
    if not window:
      return
    dt = time.perf_counter() - t_window
    avg = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
    for k in ("nonfinite_run", "nonfinite_total"):
      avg[k] = float(window[-1][k])
    sps = steps_window / dt if dt > 0 else float("nan")
    avg.update(steps_per_s=sps, examples_per_s=sps * t.batch_size,
               learning_rate=float(schedule(step_now - 1)))
    if task.tokens_per_example:
      avg["tokens_per_s"] = sps * t.batch_size * task.tokens_per_example
    if flops_dev:
      avg["tflops_per_device"] = flops_dev * sps / 1e12
      if peak:
        avg["mfu"] = avg["tflops_per_device"] / peak
    metrics.write(step_now, avg)
    if lead:
      eta = (t.total_steps - step_now) / sps if sps and sps > 0 else float("nan")
      extra = f" | mfu {100 * avg['mfu']:.1f}%" if "mfu" in avg else ""
      print(f"step {step_now}/{t.total_steps} | loss {avg['loss']:.4f} | {sps:.2f} steps/s | "
            f"{avg['examples_per_s']:.1f} ex/s | ETA {_fmt_time(eta) if math.isfinite(eta) else '?'}"
            f"{extra}", flush=True)
    window, t_window, steps_window = [], time.perf_counter(), 0

  def consume(item):
    s, m = item
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    window.append(m)
    if m["nonfinite_run"] >= t.nan_guard.max_consecutive:
      flush(s)
      ckpt.wait()
      raise TrainingDiverged(
          f"{int(m['nonfinite_run'])} consecutive steps with a non-finite loss or gradient "
          f"(up to step {s}); updates were skipped, so the parameters and the last checkpoint in "
          f"{ckpt.directory} are the last good ones")

  hook_failures = 0

  def run_hook(name: str, at: int, fn):
    """A host-side hook, after that step's checkpoint: a failure is logged and counted (metric hook_failures);
    trainer.hooks.on_error="stop" ends the run (HookFailed) once the checkpoint is on disk."""
    nonlocal hook_failures
    try:
      return fn()
    except Exception as e:  # any failure of a hook: the training state is safe, say what failed
      hook_failures += 1
      log.error("the %s hook failed at step %d (%d hook failures so far): %s: %s", name, at, hook_failures,
                type(e).__name__, e, exc_info=log.isEnabledFor(logging.DEBUG))
      metrics.write(at, {"hook_failures": float(hook_failures)})
      if t.hooks.on_error == "stop":
        ckpt.wait()
        raise HookFailed(f"the {name} hook failed at step {at}: {type(e).__name__}: {e} (the checkpoint of "
                         f"step {at} is saved in {ckpt.directory}; trainer.hooks.on_error='continue' keeps "
                         "training)") from e
      return None

  with _Signals() as signals:
    try:
      while step < t.total_steps:
        if prof.start_step >= 0 and step == prof.start_step and lead:
          jax.profiler.start_trace(os.path.join(workdir, "profile"))
        batch = mesh_lib.global_batch(next(data_iter), setup.mesh, setup.rules)
        state, m = executable(state, batch)(state, batch)
        step += 1
        steps_window += 1
        if pending is not None:
          consume(pending)
        pending = (step, m)
        if t_start is None:
          t_start = time.perf_counter()
        for hook in hooks:
          hook(step, state)
        if prof.start_step >= 0 and step == prof.start_step + prof.num_steps and lead:
          jax.block_until_ready(state)
          jax.profiler.stop_trace()
        if t.log_every and step % t.log_every == 0:
          consume(pending)
          pending = None
          flush(step)
        due_eval = bool(t.eval_every and step % t.eval_every == 0
                        and (task.eval_fn is not None or task.val_loss_fn is not None))
        due_sample = bool(t.sample_every and step % t.sample_every == 0 and task.sample_fn is not None)
        # the checkpoint first: a host-side hook that fails (or is killed) never costs the steps since the last save
        if (t.checkpoint.every_steps and step % t.checkpoint.every_steps == 0) or due_eval or due_sample:
          ckpt.save(step, state, data_iter, cfg_json)
        if due_eval:
          got = run_hook("eval", step, lambda: _eval_metrics(task, state.variables, step))
          if got is not None:
            metrics.write(step, {k: float(v) for k, v in got.items()}, prefix="eval/")
            if t.checkpoint.get("best"):
              run_hook("keep_best", step, lambda: _keep_best(ckpt, workdir, step, got, t.checkpoint))
        if due_sample:
          run_hook("sample", step, lambda: task.sample_fn(state.variables, step,
                                                          os.path.join(workdir, "samples", str(step))))
        if _stop_requested(signals, step, t.log_every):
          status = "preempted"
          log.warning("%s received: saving a checkpoint at step %d and stopping", signals.received, step)
          break
      if pending is not None:
        consume(pending)
      flush(step)
      if ckpt.latest_step() != step:
        ckpt.save(step, state, data_iter, cfg_json, force=True)
    finally:
      ckpt.close()
      metrics.close()
  if lead and status == "done" and t_start is not None:
    log.info("done: %d steps in %s", step - step_start, _fmt_time(time.perf_counter() - t_start))
  return Result(state=state, status=status, step=step, resumed_from=resumed_from)


def _eval_metrics(task: Task, variables, step: int) -> dict:
  """The eval hook's metrics, plus val_loss when the task has a val_loss_fn."""
  got = dict(task.eval_fn(variables, step) or {}) if task.eval_fn is not None else {}
  if task.val_loss_fn is not None:
    got["val_loss"] = float(task.val_loss_fn(variables))
  return got


def _keep_best(ckpt: Checkpointer, workdir: str, step: int, got: dict, c) -> bool:
  """DIR/best follows the eval metric trainer.checkpoint.best (process 0 writes; all wait for it)."""
  from shared.checkpoint import keep_best
  ckpt.wait()                                          # the step's (async) save is complete before it is linked
  better = keep_best(workdir, step, got, c.best, c.best_mode) if jax.process_index() == 0 else False
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"keep_best_{step}")
  return better


def _stop_requested(signals: _Signals, step: int, every: int) -> bool:
  """Single process: the local flag. Several: agree (all-gather the flags) every log interval."""
  if jax.process_count() == 1:
    return signals.received is not None
  if every and step % every:
    return False
  from jax.experimental import multihost_utils
  flags = multihost_utils.process_allgather(np.int32(signals.received is not None))
  if np.any(flags) and signals.received is None:
    signals.received = "SIGTERM (another process)"
  return bool(np.any(flags))
