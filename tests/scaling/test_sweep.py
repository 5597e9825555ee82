"""shared.scaling: analytic FLOPs (exact on a model with a closed form, vs XLA), the sweep end to end on the demo
system (killed mid-cell and rerun: only the unfinished cell is redone, from its checkpoint), launch commands."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared.scaling import flops as flops_lib
from shared.scaling import sweep as sweep_lib
from tests.xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def demo_cfg():
  from configs.demo import tiny
  return tiny.get_config()


def closed_form(cfg) -> float:
  """6ND-style count of the sort Transformer: per token and layer qkv 6d², out 2d², mlp 4d·mlp, attention
  4·L·d; the tied logits 2·d·V; x 3 for forward + backward."""
  m, b = cfg.model, cfg.trainer.batch_size
  per_token = m.layers * (6 * m.dim ** 2 + 2 * m.dim ** 2 + 4 * m.dim * m.mlp + 4 * m.length * m.dim)
  return 3.0 * b * m.length * (per_token + 2 * m.dim * m.vocab)


def test_analytic_flops_exact_and_close_to_xla():
  from examples.sort import make_task, scale_config
  from shared.scaling.__main__ import flops_report
  cfg = scale_config(demo_cfg(), 64)
  info = flops_lib.task_flops(cfg, make_task(cfg))
  assert info["flops_per_step"] == closed_form(cfg) and info["unknown"] == []
  report = flops_report(demo_cfg(), "configs/demo/tiny.py")
  # XLA also counts element-wise work (softmax, norms, Adam): a little above the matmul count
  assert 0.6 < report["ratio_analytic_to_xla"] < 1.0, report


def test_program_flops_enters_scan_cond_and_remat():
  a = jnp.ones((4, 8))
  w = jnp.ones((8, 8))

  def f(a, w):
    y, _ = jax.lax.scan(lambda c, _: (c @ w, None), a, None, length=5)
    y = jax.checkpoint(lambda z: z @ w)(y)
    return jax.lax.cond(True, lambda z: z @ w @ w, lambda z: z, y)
  count = flops_lib.program_flops(f, a, w)
  assert count.flops == 2 * 4 * 8 * 8 * (5 + 1 + 2)
  conv = flops_lib.program_flops(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME"),
                                 jnp.ones((2, 3, 10, 10)), jnp.ones((6, 3, 3, 3)))
  assert conv.flops == 2 * (2 * 6 * 10 * 10) * (3 * 3 * 3)


def test_launch_commands_per_cluster(tmp_path):
  cell = sweep_lib.Cell(1e12, 128)
  for cluster, head in (("local", "python -m shared.scaling cell"), ("tpu", "gcloud compute tpus tpu-vm ssh"),
                        ("slurm", "srun"), ("xpk", "xpk workload create")):
    cmd = sweep_lib.cell_command("configs/unitalking/tiny.py", ["--config.trainer.batch_size=16"], cell,
                                 str(tmp_path), cluster)
    assert cmd.startswith(head) and "--width 128" in cmd and "--budget 1e+12" in cmd
    assert "--config.trainer.batch_size=16" in cmd and "C1e12_w128" in cmd, cmd


def _sweep(workdir, budgets, sizes):
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable, "-m", "shared.scaling", "sweep", "--config", "configs/demo/tiny.py",
                           "--budgets", budgets, "--sizes", sizes, "--workdir", str(workdir)],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sweep_killed_mid_cell_redoes_only_that_cell(tmp_path):
  # cell 1 (width 32, ~90 steps) finishes; cell 2 (width 64, ~1200 steps, checkpoints every ~300) is killed
  # (SIGKILL, no goodbye) once it has a checkpoint
  budgets, sizes = "2e10,2e11", "32"
  cells = sweep_lib.plan([2e10, 2e11], [32])
  second = tmp_path / "cells" / cells[1].name
  proc = _sweep(tmp_path, budgets, sizes)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    ckpts = second / "checkpoints"
    if ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir()):
      time.sleep(0.5)
      break
    time.sleep(0.1)
  assert proc.poll() is None, proc.communicate()[0][-3000:]
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  first_summary = tmp_path / "cells" / cells[0].name / "summary.json"
  assert first_summary.exists() and not (second / "summary.json").exists()
  stamp = first_summary.stat().st_mtime_ns
  out, _ = _sweep(tmp_path, budgets, sizes).communicate(timeout=300)
  assert f"cell 1/2 {cells[0].name}: done" in out, out[-3000:]
  assert "resumed from" in out, out[-3000:]
  assert first_summary.stat().st_mtime_ns == stamp          # not rerun
  rows = [json.loads(l) for l in open(tmp_path / "summary.jsonl")]
  assert [r["cell"] for r in rows] == [c.name for c in cells]
  for r in rows:
    assert abs(r["flops_total"] - r["budget"]) <= r["flops_per_step"]
    assert np.isfinite(r["val_loss"]) and r["params"] > r["params_nonembed"] > 0 and r["tokens"] == r["examples"] * 12
  # the longer run learns more: lower held-out loss at 10x the compute
  assert rows[1]["val_loss"] < rows[0]["val_loss"]


def test_val_loss_fn_is_logged_with_the_eval_hooks_and_deterministic(tmp_path):
  from examples.sort import make_task
  from shared import train as train_lib
  cfg = demo_cfg()
  cfg.trainer.update(dict(total_steps=4, eval_every=2, log_every=2, batch_size=8))
  cfg.trainer.checkpoint.every_steps = 4
  task = make_task(cfg)
  result = train_lib.train(cfg, task, str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  logged = [r["eval/val_loss"] for r in rows if "eval/val_loss" in r]
  assert len(logged) == 2 and all(np.isfinite(logged))
  again = task.val_loss_fn(result.state.variables)
  assert again == task.val_loss_fn(result.state.variables) and abs(again - logged[-1]) < 1e-6
