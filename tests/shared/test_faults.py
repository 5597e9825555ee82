"""Fault injection: nothing is lost, errors come before any work, one clear line.

  kill -9 at random points (inside checkpoint writes and metrics lines too), several runs: the resumed run
      ends bitwise equal to an uninterrupted one
  a damaged newest checkpoint (truncated or missing file): resume falls back to the previous step, names the
      step and the file, keeps the damaged step aside; trainer.checkpoint.resume_step picks a step
  a failing sample hook: the checkpoint of that step is already saved; the run goes on (counted) or stops
      after the save (hooks.on_error="stop")
  config errors (mesh vs devices, batch vs shards, sampling settings, init entries, an unwritable workdir)
      before any data is built; metrics.jsonl stays strict JSON with a NaN loss
  another device count: training resumes with the same global batch and data order
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs.demo import tiny
from examples.sort import make_task
from shared import checkpoint as ckpt_lib
from shared import train as train_lib
from shared.errors import ConfigError
from tests.shared.test_resume import TOTAL, assert_same_run, run
from tests.xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  d = tmp_path_factory.mktemp("plain")
  p = run(d, "plain")
  assert p.returncode == 0, p.stderr[-3000:]
  return d


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill9_at_random_points_then_resume_is_bitwise(reference, tmp_path, seed):
  p = run(tmp_path, f"killrand@{seed}")
  assert p.returncode in (-9, 0), p.stderr[-3000:]
  p = run(tmp_path, "plain")
  assert p.returncode == 0, p.stderr[-3000:]
  assert f"STATUS done {TOTAL}" in p.stdout
  assert_same_run(reference, tmp_path)
  for line in open(tmp_path / "metrics.jsonl"):   # no torn line survives the resume
    json.loads(line)


def _truncate_one_array_file(step_dir):
  files = sorted(os.path.join(step_dir, "state", "d", f) for f in os.listdir(os.path.join(step_dir, "state", "d")))
  with open(files[0], "r+b") as f:
    f.truncate(10)
  return files[0]


def test_damaged_newest_checkpoint_falls_back_and_names_the_file(reference, tmp_path):
  p = run(tmp_path, "kill@9")   # checkpoints 4 and 8 complete, killed after step 9
  assert p.returncode == -9
  broken = _truncate_one_array_file(tmp_path / "checkpoints" / "8")
  p = run(tmp_path, "plain")
  assert p.returncode == 0, p.stderr[-3000:]
  assert f"STATUS done {TOTAL} resumed_from=4" in p.stdout
  assert "checkpoint step 8 is damaged" in p.stderr and os.path.basename(broken) in p.stderr
  kept = os.listdir(tmp_path / "checkpoints_damaged")
  assert len(kept) == 1 and kept[0].startswith("8-")          # kept aside, never deleted
  assert_same_run(reference, tmp_path)
  # a missing file is named too; restore() (sample / export / evaluate) skips the damaged step without moving it
  os.remove(tmp_path / "checkpoints" / "12" / "state" / "_METADATA")
  r = ckpt_lib.restore(str(tmp_path))
  assert r.step == 8 and os.path.isdir(tmp_path / "checkpoints" / "12")


def test_resume_step_override(reference, tmp_path):
  """--resume_step N branches the run at N: later steps are kept aside (checkpoints_superseded), not deleted."""
  p = run(tmp_path, "kill@9")
  assert p.returncode == -9
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), PYTHONPATH=ROOT)
  cmd = [sys.executable, "-m", "examples.sort", "--config", "configs/demo/tiny.py", "--workdir", str(tmp_path),
         "--config.model.dim=32", "--config.model.mlp=64", "--config.model.layers=2", "--config.model.heads=2",
         "--config.trainer.total_steps=6", "--config.trainer.log_every=1",
         "--config.trainer.checkpoint.every_steps=4", "--config.trainer.checkpoint.keep=10"]
  p = subprocess.run(cmd + ["--resume_step", "4"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
  assert p.returncode == 0 and "resumed from" in p.stderr and "/4" in p.stderr, p.stderr[-3000:]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "6"]
  assert [d.split("-")[0] for d in os.listdir(tmp_path / "checkpoints_superseded")] == ["8"]
  assert [json.loads(l)["step"] for l in open(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
  p = subprocess.run(cmd + ["--resume_step", "5"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
  assert p.returncode == 2 and "resume_step=5" in p.stderr and "Traceback" not in p.stderr, p.stderr[-3000:]


def small_sort_cfg(**trainer):
  cfg = tiny.get_config()
  cfg.model.update(dict(dim=32, mlp=64, layers=1, heads=2))
  cfg.trainer.update({"total_steps": 6, "log_every": 1, **trainer})
  cfg.trainer.checkpoint.update(dict(every_steps=0, async_save=False))
  return cfg


def test_failing_sample_hook_loses_nothing(tmp_path):
  cfg = small_sort_cfg(sample_every=3)
  task = make_task(cfg)
  calls = []

  def broken(variables, step, out_dir):
    calls.append((step, sorted(os.listdir(tmp_path / "checkpoints"))))
    raise ValueError("sampling.steps=0")
  task.sample_fn = broken
  result = train_lib.train(cfg, task, str(tmp_path))
  assert result.step == 6 and [s for s, _ in calls] == [3, 6]
  assert all(str(s) in saved for s, saved in calls)             # that step's checkpoint came first
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["hook_failures"] for r in rows if "hook_failures" in r] == [1.0, 2.0]
  cfg.trainer.hooks.on_error = "stop"
  with pytest.raises(train_lib.HookFailed, match="step 3.*saved"):
    train_lib.train(cfg, task, str(tmp_path / "stop"))
  assert "3" in os.listdir(tmp_path / "stop" / "checkpoints")


def test_best_checkpoint_follows_the_eval_metric(tmp_path):
  """trainer.checkpoint.best keeps the best-scoring step as DIR/best (a workdir of its own) through keep-last-N
  rotation, resumes, a non-finite score and a metric the hook does not return."""
  import jax
  from shared.checkpoint import best_record, restore
  from shared.errors import ConfigError
  scores = {2: 5.0, 4: 3.0, 6: 4.0, 8: float("nan"), 10: 3.5, 12: 1.0}
  cfg = small_sort_cfg(total_steps=8, eval_every=2)
  cfg.trainer.checkpoint.update(dict(keep=1, async_save=True, best="score", best_mode="min"))
  task = make_task(cfg)
  task.eval_fn = lambda variables, step: {"score": scores[step]}
  wd = str(tmp_path / "run")
  train_lib.train(cfg, task, wd)
  assert best_record(wd) == {"metric": "score", "mode": "min", "value": 3.0, "step": 4}
  assert os.listdir(os.path.join(wd, "best", "checkpoints")) == ["4"]
  assert os.listdir(os.path.join(wd, "checkpoints")) == ["8"]          # step 4 rotated out of checkpoints/
  ref = small_sort_cfg(total_steps=4)                                  # the same run stopped at step 4
  train_lib.train(ref, make_task(ref), str(tmp_path / "ref"))
  got, want = restore(os.path.join(wd, "best")), restore(str(tmp_path / "ref"))
  assert got.step == want.step == 4
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  cfg.trainer.total_steps = 10                                         # resumed: 3.5 does not beat 3.0 (best.json)
  train_lib.train(cfg, task, wd)
  assert best_record(wd)["step"] == 4
  cfg.trainer.total_steps = 12                                         # 1.0 does: the old best step is removed
  train_lib.train(cfg, task, wd)
  assert best_record(wd)["step"] == 12 and os.listdir(os.path.join(wd, "best", "checkpoints")) == ["12"]
  cfg.trainer.total_steps = 14                                         # a metric the hook does not return
  task.eval_fn = lambda variables, step: {"other": 0.0}
  train_lib.train(cfg, task, wd)
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert [r["hook_failures"] for r in rows if "hook_failures" in r] == [1.0] and best_record(wd)["step"] == 12
  bad = small_sort_cfg(total_steps=2, eval_every=2)
  bad.trainer.checkpoint.best_mode = "lowest"
  with pytest.raises(ConfigError, match="checkpoint.best_mode"):
    train_lib.train(bad, make_task(bad), str(tmp_path / "bad"))


class _NoData(Exception):
  pass


def _no_data_task(cfg):
  task = make_task(cfg)

  def boom():
    raise _NoData("the data pipeline was built before the config was checked")
  task.make_train_iter = boom
  return task


@pytest.mark.parametrize("trainer, match", [
    (dict(mesh=dict(data=3)), "mesh"),
    (dict(batch_size=12, mesh=dict(data=8)), "batch_size=12"),
    (dict(optimizer=dict(accumulate_steps=5)), "accumulate_steps"),
    (dict(checkpoint=dict(resume_step=-4)), "resume_step"),
    (dict(hooks=dict(on_error="ignore")), "hooks.on_error"),
])
def test_config_errors_before_any_data(tmp_path, trainer, match):
  cfg = small_sort_cfg()
  for k, v in trainer.items():
    if isinstance(v, dict):
      cfg.trainer[k].update(v)
    else:
      cfg.trainer[k] = v
  with pytest.raises(ConfigError, match=match):
    train_lib.train(cfg, _no_data_task(cfg), str(tmp_path))


def test_init_entry_and_workdir_errors_before_any_data(tmp_path):
  cfg = small_sort_cfg()
  from shared.weights.init import init_entry
  with cfg.unlocked():
    cfg.init = {"encoder": init_entry(path=str(tmp_path / "missing_ckpt"))}
  with pytest.raises(ConfigError, match=r"init\.encoder\.path"):
    train_lib.train(cfg, _no_data_task(cfg), str(tmp_path / "w"))
  cfg = small_sort_cfg()
  (tmp_path / "a_file").write_text("x")
  with pytest.raises(ConfigError, match="not writable"):   # (root ignores chmod: a path under a file)
    train_lib.train(cfg, _no_data_task(cfg), str(tmp_path / "a_file" / "workdir"))


def test_unitalking_sampling_error_before_any_data():
  from configs.unitalking.tiny import get_config
  from unitalking_jax.task import make_task as unitalking_task
  for key, value, match in (("steps", 0, r"sampling\.steps = 0"), ("sampler", "ddim", r"sampling\.sampler"),
                            ("text_scale", -1.0, r"sampling\.text_scale")):
    cfg = get_config()
    cfg.sampling[key] = value
    with pytest.raises(ConfigError, match=match):
      unitalking_task(cfg)     # make_task runs before the trainer builds anything


def test_metrics_jsonl_is_strict_json_with_a_nan_loss(tmp_path):
  cfg = small_sort_cfg(total_steps=3)
  train_lib.train(cfg, make_task(cfg, poison_steps=(2,)), str(tmp_path))

  def strict(text):
    return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
  rows = [strict(l) for l in open(tmp_path / "metrics.jsonl")]
  bad = [r for r in rows if r["step"] == 2][0]
  assert bad["loss"] is None and "loss" in bad["nonfinite"]
  assert all(r["loss"] is not None for r in rows if r["step"] != 2)


def _bn_worker(workdir, total, devices):
  env = dict(os.environ, XLA_FLAGS=xla_flags(devices), PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, os.path.join(ROOT, "tests/shared/bn_worker.py"), str(workdir), str(total),
                         "plain"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_resume_on_another_device_count(tmp_path):
  """4 steps on 2 devices, then 4 more on 1 (same global batch, same data order): the run continues the one-device
  trajectory to float32 reduction-order rounding (the global-batch reductions run in another order)."""
  assert _bn_worker(tmp_path / "one", 8, 1).returncode == 0
  p = _bn_worker(tmp_path / "moved", 4, 2)
  assert p.returncode == 0, p.stderr[-2000:]
  p = _bn_worker(tmp_path / "moved", 8, 1)
  assert p.returncode == 0 and "resumed_from=4" in p.stdout, p.stderr[-2000:]
  a, b = np.load(tmp_path / "one" / "final.npz"), np.load(tmp_path / "moved" / "final.npz")
  for k in a.files:   # (SGD at lr 0.5 carries the ~1e-7 reduction-order rounding of step 1-4 into ~4e-6 by step 8)
    np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)
  la = [json.loads(l)["loss"] for l in open(tmp_path / "one" / "metrics.jsonl")]
  lb = [json.loads(l)["loss"] for l in open(tmp_path / "moved" / "metrics.jsonl")]
  np.testing.assert_allclose(lb, la, rtol=1e-5)
