"""The trainer: sharding is transparent, FSDP shrinks per-device memory, frozen masks, NaN guard,
gradient accumulation, mismatched checkpoints."""
import os

import jax
import ml_collections
import numpy as np
import pytest

from configs.demo import tiny
from examples.sort import make_task
from shared import mesh as mesh_lib
from shared import train as train_lib
from shared.errors import CheckpointError


def small_cfg(**trainer):
  cfg = tiny.get_config()
  cfg.model.update(dict(dim=32, mlp=64, heads=2, layers=2))
  cfg.trainer.update(dict(total_steps=3, batch_size=16, log_every=1))
  cfg.trainer.checkpoint.every_steps = 0
  cfg.trainer.checkpoint.async_save = False
  cfg.trainer.update(trainer)
  return cfg


def mesh_of(devices, data=1, fsdp=1, tensor=1):
  return mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor, sequence=1)),
                            devices=devices)


def run_steps(cfg, mesh, n, task=None):
  """n steps without checkpoints; returns (losses, params as numpy)."""
  task = task or make_task(cfg)
  it = task.make_train_iter()
  example = train_lib._peek(it)
  setup = train_lib.build(cfg, task, mesh=mesh, example_batch=example)
  state = setup.init_fn()
  losses = []
  for _ in range(n):
    state, m = setup.step_fn(state, mesh_lib.global_batch(next(it), setup.mesh, setup.rules))
    losses.append(float(m["loss"]))
  return losses, train_lib.flat(jax.device_get(state.params)), state, setup


def test_sharded_equals_single_device():
  assert jax.device_count() == 8
  cfg = small_cfg()
  l1, p1, _, _ = run_steps(cfg, mesh_of(jax.devices()[:1]), 3)
  l8, p8, state8, setup8 = run_steps(cfg, mesh_of(jax.devices(), data=2, fsdp=2, tensor=2), 3)
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  for k in p1:
    np.testing.assert_allclose(p8[k], p1[k], rtol=1e-5, atol=1e-6, err_msg=k)
  # the parameters really are sharded: the qkv kernel splits embed over fsdp and heads over tensor
  qkv = state8.params["blocks"]["qkv"]
  assert qkv.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", None, "tensor", None)
  assert qkv.addressable_shards[0].data.shape == (2, 16, 3, 1, 16)


def test_replicate_keeps_matching_weights_whole():
  """trainer.replicate: the matching weights (and their Adam moments) are whole on every device, the rest still
  follows the rules; a bad pattern is a ConfigError naming the key."""
  from shared.errors import ConfigError
  cfg = small_cfg(replicate=("blocks/qkv",))
  task = make_task(cfg)
  setup = train_lib.build(cfg, task, mesh=mesh_of(jax.devices(), data=2, fsdp=2, tensor=2),
                          example_batch=train_lib._peek(task.make_train_iter()))
  specs = {k: s.spec for k, s in train_lib.flat(setup.state_shardings.params).items()}
  assert specs["blocks/qkv"] == jax.sharding.PartitionSpec()
  assert any("fsdp" in str(s) for k, s in specs.items() if k != "blocks/qkv")
  moments = [s.spec for p, s in jax.tree_util.tree_leaves_with_path(setup.state_shardings.opt_state)
             if "blocks/qkv" in jax.tree_util.keystr(p)]
  assert moments and all(m == jax.sharding.PartitionSpec() for m in moments)
  with pytest.raises(ConfigError, match="replicate"):
    train_lib.build(small_cfg(replicate=("blocks/(",)), task)


def test_fsdp_shrinks_per_device_state_memory():
  cfg = small_cfg()
  cfg.model.update(dict(dim=256, mlp=1024, heads=4, layers=2, vocab=64))
  cfg.trainer.rules = (("vocab", None),)

  def state_bytes(mesh):
    task = make_task(cfg)
    it = task.make_train_iter()
    setup = train_lib.build(cfg, task, mesh=mesh, example_batch=train_lib._peek(it))
    state = setup.init_fn()
    batch = mesh_lib.global_batch(train_lib._peek(it), setup.mesh, setup.rules)
    mem = setup.step_fn.lower(state, batch).compile().memory_analysis()
    batch_bytes = sum(x.nbytes for x in jax.tree.leaves(batch)) // mesh.size
    return mem.argument_size_in_bytes - batch_bytes, mem.output_size_in_bytes

  one, _ = state_bytes(mesh_of(jax.devices()[:1]))
  eight, _ = state_bytes(mesh_of(jax.devices(), fsdp=8))
  ratio = eight / one
  # parameters + Adam moments split 8 ways, plus small replicated leaves (norms, step, counters)
  assert 0.125 <= ratio < 0.135, (one, eight, ratio)


def test_frozen_parameters_bit_identical_and_stateless():
  cfg = small_cfg()
  task = make_task(cfg)
  task.trainable = lambda path: path.startswith("blocks/fc")
  _, p0, _, _ = run_steps(cfg, mesh_of(jax.devices()[:1]), 0, task)
  _, p3, state, setup = run_steps(cfg, mesh_of(jax.devices()[:1]), 3, task)
  assert setup.trainable_keys == {"blocks/fc1", "blocks/fc2"}
  for k in p0:
    if k.startswith("blocks/fc"):
      assert not np.array_equal(p0[k], p3[k]), k
    else:
      np.testing.assert_array_equal(p0[k], p3[k], err_msg=k)
  opt_keys = {getattr(p[-1], "key", None) for p, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]}
  assert opt_keys - {None} == {"blocks/fc1", "blocks/fc2"}


def test_nonfinite_step_is_skipped_and_counted():
  cfg = small_cfg()
  _, p_before, _, _ = run_steps(cfg, mesh_of(jax.devices()[:1]), 1)
  task = make_task(cfg, poison_steps=(2,))
  losses, p_after, state, _ = run_steps(cfg, mesh_of(jax.devices()[:1]), 2, task)
  assert np.isnan(losses[1])
  for k in p_before:
    np.testing.assert_array_equal(p_before[k], p_after[k], err_msg=k)
  assert int(state.nonfinite_total) == 1 and int(state.nonfinite_run) == 1
  assert int(state.step) == 2


def test_consecutive_nonfinite_stop_with_clear_error(tmp_path):
  cfg = small_cfg(total_steps=8)
  cfg.trainer.nan_guard.max_consecutive = 3
  cfg.trainer.checkpoint.every_steps = 2
  task = make_task(cfg, poison_steps=(3, 4, 5, 6, 7, 8))
  with pytest.raises(train_lib.TrainingDiverged, match="3 consecutive"):
    train_lib.train(cfg, task, str(tmp_path), mesh=mesh_of(jax.devices()[:1]))
  ckpts = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert ckpts and ckpts[0] == 2


def test_gradient_accumulation_matches_full_batch():
  cfg = small_cfg()
  l1, p1, _, _ = run_steps(cfg, mesh_of(jax.devices()[:1]), 2)
  cfg.trainer.optimizer.accumulate_steps = 4
  l4, p4, _, _ = run_steps(cfg, mesh_of(jax.devices()[:1]), 2)
  np.testing.assert_allclose(l4, l1, rtol=1e-5)
  for k in p1:
    np.testing.assert_allclose(p4[k], p1[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_mismatched_checkpoint_names_the_keys(tmp_path):
  cfg = small_cfg(total_steps=1)
  train_lib.train(cfg, make_task(cfg), str(tmp_path), mesh=mesh_of(jax.devices()[:1]))
  cfg2 = small_cfg(total_steps=2)
  cfg2.model.mlp = 48
  with pytest.raises(CheckpointError, match="fc1"):
    train_lib.train(cfg2, make_task(cfg2), str(tmp_path), mesh=mesh_of(jax.devices()[:1]))
