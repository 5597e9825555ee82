"""IsoFLOP sweeps: one training run per (compute budget, model size) cell, resumable, one summary row each.

  python -m shared.scaling sweep --config configs/<system>/<name>.py --budgets 1e12,3e12,1e13 \
      --sizes 64,96,128,192 --workdir SWEEP [--launch local|print] [--cluster tpu|slurm|xpk]

A size is a model width; the system's `scale_config(cfg, width)` sets everything else by its documented rule
(depth, heads, feed-forward, learning rate scaled with width). A cell's steps = budget / (analytic FLOPs per
step) (shared/scaling/flops.py: the program's matmuls, 3 x forward), its warm-up min(config, steps / 10), its
checkpoints every min(config, steps / 4) steps (a killed cell loses at most a quarter), no samples.
`--launch local` runs the cells one after another in this process (the system's data codecs are fitted once);
a cell with SWEEP/cells/<cell>/summary.json is done and skipped; an unfinished one resumes from its newest
checkpoint (shared.train). `--launch print` prints one command per cell instead: `python -m shared.scaling cell
...` under the cluster's launcher, where jax.distributed starts from the environment (shared/mesh.py).

Each finished cell writes summary.json, and SWEEP/summary.jsonl collects them (the fitter's input):
  cell, budget, size, params, params_nonembed, flops_per_step, steps, flops_total, examples, tokens,
  val_loss (Task.val_loss_fn: fixed held-out set, fixed noise / timesteps), train_loss (last log window),
  wall_s (training wall time, summed over resumes), mfu (null without a known device peak), unknown_flops.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shlex
import time

from shared.errors import ConfigError

log = logging.getLogger("shared.scaling")

CLUSTERS = ("local", "tpu", "slurm", "xpk")


@dataclasses.dataclass(frozen=True)
class Cell:
  budget: float
  width: int

  @property
  def name(self) -> str:
    return f"C{self.budget:.3g}_w{self.width}".replace("+", "")


def parse_list(text: str, kind, flag: str) -> list:
  try:
    values = [kind(float(v)) if kind is int else kind(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise ConfigError(f"{flag}={text}: expected a comma-separated list of numbers") from None
  if not values or any(v <= 0 for v in values):
    raise ConfigError(f"{flag}={text}: expected positive numbers")
  return values


def plan(budgets, widths) -> list[Cell]:
  return [Cell(float(b), int(w)) for b in budgets for w in widths]


def _write_json(path: str, obj) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, default=float)
  os.replace(tmp, path)


def _last_metrics(workdir: str) -> dict:
  path = os.path.join(workdir, "metrics.jsonl")
  last = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        row = json.loads(line)
        if "loss" in row:
          last = row
  return last


def configure_cell(cfg, mod, cell: Cell):
  """Scales cfg to the cell's width (in place) and builds the task. -> (cfg, task, flops info)."""
  from shared.scaling.flops import task_flops
  if not hasattr(mod, "scale_config"):
    raise ConfigError(f"{mod.__name__} has no scale_config(cfg, width): the system has no sweep size rule")
  mod.scale_config(cfg, cell.width)
  task = mod.make_task(cfg)
  if task.val_loss_fn is None:
    raise ConfigError(f"{mod.__name__}.make_task gives no Task.val_loss_fn: a sweep needs a validation loss")
  info = task_flops(cfg, task)
  t = cfg.trainer
  steps = max(1, int(round(cell.budget / info["flops_per_step"])))
  t.total_steps = steps
  t.schedule.warmup_steps = int(min(t.schedule.warmup_steps, steps // 10))
  t.checkpoint.every_steps = int(max(1, min(t.checkpoint.every_steps or steps, steps // 4)))
  t.log_every = int(max(1, min(t.log_every or steps, steps // 10)))
  t.sample_every, t.eval_every = 0, 0
  return cfg, task, info


def run_cell(cfg, mod, cell: Cell, cell_dir: str) -> dict | None:
  """Trains one cell to its budget (resuming), then its validation loss. -> the summary row (None when
  preempted). A finished cell (summary.json present) is read back, not rerun."""
  import jax

  from shared import train as train_lib
  from shared.scaling.systems import param_counts
  done = os.path.join(cell_dir, "summary.json")
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  os.makedirs(cell_dir, exist_ok=True)
  cfg, task, info = configure_cell(cfg, mod, cell)
  wall_path = os.path.join(cell_dir, "wall.json")
  wall = 0.0
  if os.path.exists(wall_path):
    with open(wall_path) as f:
      wall = json.load(f)["wall_s"]
  t0 = time.perf_counter()
  try:
    result = train_lib.train(cfg, task, cell_dir)
  finally:
    if jax.process_index() == 0:
      _write_json(wall_path, {"wall_s": wall + time.perf_counter() - t0})
  wall += time.perf_counter() - t0
  if result.status != "done":
    return None
  val = float(task.val_loss_fn(result.state.variables))
  total, nonembed = param_counts(result.state.params)
  last = _last_metrics(cell_dir)
  t = cfg.trainer
  examples = t.total_steps * t.batch_size
  row = {"cell": cell.name, "budget": cell.budget, "size": str(cell.width), "width": cell.width,
         "params": total, "params_nonembed": nonembed, "flops_per_step": info["flops_per_step"],
         "steps": t.total_steps, "flops_total": info["flops_per_step"] * t.total_steps, "examples": examples,
         "tokens": examples * task.tokens_per_example if task.tokens_per_example else None,
         "val_loss": val, "train_loss": last.get("loss"), "wall_s": wall, "mfu": last.get("mfu"),
         "unknown_flops": info["unknown"]}
  if jax.process_index() == 0:
    _write_json(done, row)
  jax.clear_caches()
  return row


def collect(sweep_dir: str, cells: list[Cell]) -> list[dict]:
  """SWEEP/summary.jsonl rewritten from the finished cells' summary.json, in plan order."""
  rows = []
  for c in cells:
    path = os.path.join(sweep_dir, "cells", c.name, "summary.json")
    if os.path.exists(path):
      with open(path) as f:
        rows.append(json.load(f))
  tmp = os.path.join(sweep_dir, f"summary.jsonl.tmp{os.getpid()}")
  with open(tmp, "w") as f:
    for r in rows:
      f.write(json.dumps(r, default=float) + "\n")
  os.replace(tmp, os.path.join(sweep_dir, "summary.jsonl"))
  return rows


def cell_command(config_arg: str, overrides: list[str], cell: Cell, sweep_dir: str, cluster: str,
                 accelerator: str = "v5p-64") -> str:
  """The command that runs one cell on a cluster (the same entry point; jax.distributed from the env)."""
  inner = " ".join(["python -m shared.scaling cell", f"--config {shlex.quote(config_arg)}",
                    *map(shlex.quote, overrides), f"--width {cell.width}", f"--budget {cell.budget:g}",
                    f"--workdir {shlex.quote(os.path.join(sweep_dir, 'cells', cell.name))}"])
  if cluster == "local":
    return inner
  if cluster == "tpu":   # every worker of a TPU VM slice runs it; jax.distributed auto-detects the slice
    return (f"gcloud compute tpus tpu-vm ssh $TPU_NAME --zone $ZONE --worker=all "
            f"--command {shlex.quote('cd $REPO && ' + inner)}")
  if cluster == "slurm":  # one process per GPU; jax.distributed reads SLURM_* itself
    return f"srun --nodes=$NODES --ntasks-per-node=8 --gpus-per-task=1 {inner}"
  if cluster == "xpk":
    return (f"xpk workload create --cluster $CLUSTER --workload {cell.name.lower().replace('.', '-')} "
            f"--tpu-type {accelerator} --num-slices 1 --command {shlex.quote(inner)}")
  raise ConfigError(f"--cluster {cluster}: one of {CLUSTERS}")


def sweep(base_cfg, config_arg: str, overrides: list[str], budgets, widths, sweep_dir: str,
          launch: str = "local", cluster: str = "local") -> list[dict]:
  """Runs (launch=local) or prints (launch=print) every cell; returns the finished rows."""
  from shared.scaling.systems import system_module
  cells = plan(budgets, widths)
  os.makedirs(os.path.join(sweep_dir, "cells"), exist_ok=True)
  plan_path = os.path.join(sweep_dir, "plan.json")
  plan_obj = {"config": config_arg, "overrides": list(overrides), "budgets": [c.budget for c in cells],
              "widths": [c.width for c in cells]}
  if os.path.exists(plan_path):
    with open(plan_path) as f:
      old = json.load(f)
    if (old["config"], old["overrides"]) != (plan_obj["config"], plan_obj["overrides"]):
      raise ConfigError(f"{plan_path}: this sweep was planned with --config {old['config']} {old['overrides']}; "
                        f"use another --workdir for --config {config_arg} {list(overrides)}")
  _write_json(plan_path, plan_obj)
  if launch == "print":
    for c in cells:
      print(cell_command(config_arg, overrides, c, sweep_dir, cluster), flush=True)
    return collect(sweep_dir, cells)
  if launch != "local":
    raise ConfigError(f"--launch {launch}: one of local, print")
  mod = system_module(config_arg, base_cfg, need=("make_task", "scale_config"))
  for i, c in enumerate(cells):
    cell_dir = os.path.join(sweep_dir, "cells", c.name)
    state = "done" if os.path.exists(os.path.join(cell_dir, "summary.json")) else "running"
    print(f"[sweep] cell {i + 1}/{len(cells)} {c.name}: {state}", flush=True)
    row = run_cell(copy.deepcopy(base_cfg), mod, c, cell_dir)
    if row is None:
      print(f"[sweep] stopped in cell {c.name}; rerun the same command to resume it", flush=True)
      break
    print(f"[sweep] {c.name}: {row['steps']} steps, params {row['params']:,}, val_loss {row['val_loss']:.4f}, "
          f"{row['wall_s']:.0f} s", flush=True)
    collect(sweep_dir, cells)
  return collect(sweep_dir, cells)

