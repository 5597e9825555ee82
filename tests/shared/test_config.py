"""Config validation, schedules, mesh shapes, and the entry point as a user runs it."""
import glob
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs.demo import tiny
from shared import config as config_lib
from shared import mesh as mesh_lib
from shared.errors import ConfigError
from tests.xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("key,value,match", [
    ("total_steps", 0, "trainer.total_steps"),
    ("optimizer.name", "adamm", "trainer.optimizer.name"),
    ("schedule.name", "cosine", "trainer.schedule.name"),
    ("precision.compute_dtype", "bf16", "trainer.precision.compute_dtype"),
    ("remat", "some", "trainer.remat"),
    ("optimizer.accumulate_steps", 3, "trainer.optimizer.accumulate_steps"),
])
def test_validation_names_the_key(key, value, match):
  t = config_lib.trainer_config()
  node = t
  *parents, leaf = key.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ConfigError, match=match.replace(".", r"\.")):
    config_lib.validate_trainer(t)


def test_locked_config_rejects_unknown_key():
  cfg = tiny.get_config()
  cfg.lock()
  with pytest.raises(AttributeError, match="no_such_key"):
    cfg.trainer.no_such_key = 1
  with pytest.raises(ConfigError, match="no_such_key"):
    config_lib.check_known_keys(cfg, {"trainer.no_such_key": 1})


def test_tri_stage_schedule():
  t = config_lib.trainer_config()
  t.optimizer.learning_rate = 1e-4
  t.schedule.update(dict(name="tri_stage", warmup_steps=10, hold_steps=5, decay_steps=20, init_ratio=0.01,
                         final_ratio=0.05))
  lr = config_lib.build_schedule(t)
  np.testing.assert_allclose(float(lr(0)), 1e-6, rtol=1e-5)
  np.testing.assert_allclose(float(lr(10)), 1e-4, rtol=1e-5)
  np.testing.assert_allclose(float(lr(14)), 1e-4, rtol=1e-5)
  np.testing.assert_allclose(float(lr(25)), 1e-4 * 0.05 ** 0.5, rtol=1e-4)  # halfway down, geometric
  np.testing.assert_allclose(float(lr(35)), 5e-6, rtol=1e-4)
  np.testing.assert_allclose(float(lr(1000)), 5e-6, rtol=1e-4)


def test_warmup_cosine_schedule():
  t = config_lib.trainer_config()
  t.total_steps, t.schedule.warmup_steps = 100, 10
  lr = config_lib.build_schedule(t)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(10)), 1e-3, rtol=1e-6)
  assert float(lr(55)) < 1e-3 and float(lr(99)) < 1e-5


def test_mesh_shape_fills_the_rest_and_explains_mismatch():
  c = ml_collections.ConfigDict(dict(data=-1, fsdp=2, tensor=2, sequence=1))
  assert mesh_lib.mesh_shape(c, 8) == (2, 2, 2, 1)
  c.data = 4
  with pytest.raises(ConfigError, match="needs 16 devices, but 8"):
    mesh_lib.mesh_shape(c, 8)


def run_cli(workdir, *extra):
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "examples.sort", "--config", "configs/demo/tiny.py",
                         "--workdir", str(workdir), "--config.trainer.total_steps=6",
                         "--config.trainer.log_every=2", "--config.trainer.checkpoint.every_steps=3",
                         "--config.model.layers=1", *extra],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_entry_point_metrics_checkpoints_profile_and_resume(tmp_path):
  p = run_cli(tmp_path, "--config.trainer.profile.start_step=2", "--config.trainer.profile.num_steps=2")
  assert p.returncode == 0, p.stderr[-3000:]
  progress = [l for l in p.stdout.splitlines() if l.startswith("step ")]
  assert len(progress) == 3 and "ETA" in progress[-1] and "steps/s" in progress[-1]
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [2, 4, 6]
  for key in ("loss", "grad_norm", "accuracy", "examples_per_s", "tokens_per_s", "tflops_per_device",
              "learning_rate"):
    assert key in rows[-1] and np.isfinite(rows[-1][key]), key
  assert glob.glob(str(tmp_path / "events.out.tfevents.*"))
  assert glob.glob(str(tmp_path / "profile" / "**" / "*.xplane.pb"), recursive=True)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]
  saved = json.loads(open(tmp_path / "config.json").read())
  assert saved["trainer"]["total_steps"] == 6
  # the same command again resumes from the latest checkpoint and has nothing left to do
  p = run_cli(tmp_path)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "done at step 6" in p.stdout and "resumed from" in p.stderr


def test_entry_point_config_typo_names_the_key(tmp_path):
  p = run_cli(tmp_path, "--config.trainer.no_such_key=1")
  assert p.returncode != 0
  assert "no_such_key" in p.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


def test_model_section_round_trip_and_strict_from_section():
  """model_section holds every field of a (nested) model dataclass with its own defaults; from_section rebuilds
  it strictly: a field missing from a saved config, or a key the class lacks, fails naming the dotted key."""
  import dataclasses

  import ml_collections

  from shared.config import from_section, model_section
  from shared.errors import ConfigError

  @dataclasses.dataclass(frozen=True)
  class Inner:
    width: int = 8
    patch: tuple = (1, 2)

  @dataclasses.dataclass(frozen=True)
  class Outer:
    inner: Inner
    depth: int = 2
    gate: bool = True

  c = ml_collections.ConfigDict(dict(data=dict(width=16)))
  c.model = model_section(Outer, inner=dict(width=c.data.get_ref("width")), depth=3)
  assert c.model.to_dict() == {"inner": {"width": 16, "patch": (1, 2)}, "depth": 3, "gate": True}
  c.data.width = 32   # a reference: the model follows the data
  assert from_section(Outer, c.model) == Outer(Inner(32, (1, 2)), 3, True)
  saved = json.loads(c.to_json())["model"]          # as in DIR/config.json: tuples become lists
  assert from_section(Outer, saved) == Outer(Inner(32, (1, 2)), 3, True)
  del saved["inner"]["patch"]
  with pytest.raises(ConfigError, match=r"model\.inner\.patch is missing"):
    from_section(Outer, saved)
  with pytest.raises(ConfigError, match=r"model\.typo"):
    from_section(Outer, {**json.loads(c.to_json())["model"], "typo": 1})
  with pytest.raises(ConfigError, match="no field"):
    model_section(Outer, depht=3)
