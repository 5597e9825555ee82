"""The trainer contract: losses weighted by what they count (ragged accumulation == full batch, 8 devices
== 1), mutable model state (BatchNorm statistics: updated, shared over data-parallel devices, resumed
bitwise, used in eval), and restore() without a trainer on any device count."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from shared import checkpoint as ckpt_lib
from shared import mesh as mesh_lib
from shared import train as train_lib
from shared.errors import CheckpointError
from tests.shared import contract_tasks as ct
from tests.xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def mesh_of(n, data=None):
  return mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=data or n, fsdp=1, tensor=1, sequence=1)),
                            devices=jax.devices()[:n])


def run(make_task, n_dev=1, accumulate=1, steps=2):
  cfg = ct.config()
  cfg.trainer.optimizer.accumulate_steps = accumulate
  task = make_task(cfg)
  it = task.make_train_iter()
  setup = train_lib.build(cfg, task, mesh=mesh_of(n_dev), example_batch=train_lib._peek(it))
  state = setup.init_fn()
  losses = []
  for _ in range(steps):
    state, m = setup.step_fn(state, mesh_lib.global_batch(next(it), setup.mesh, setup.rules))
    losses.append(float(m["loss"]))
  return losses, jax.device_get(state), float(m["loss_weight"])


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  fa, fb = train_lib.flat(a), train_lib.flat(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_allclose(fa[k], fb[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize("make_task", [ct.lm_task, ct.ctc_task], ids=["lm", "ctc"])
def test_ragged_accumulation_equals_full_batch_and_8_devices_equal_1(make_task):
  full, s_full, w = run(make_task)
  acc, s_acc, w_acc = run(make_task, accumulate=4)
  dev8, s_dev8, _ = run(make_task, n_dev=8)
  assert w == w_acc > 0
  np.testing.assert_allclose(acc, full, rtol=1e-5)
  np.testing.assert_allclose(dev8, full, rtol=1e-5)
  assert_trees_close(s_acc.params, s_full.params)
  assert_trees_close(s_dev8.params, s_full.params)
  # the old contract (mean of micro-batch means) gives a different loss on these ragged batches
  cfg = ct.config()
  task = make_task(cfg)
  batch = next(task.make_train_iter())
  params = s_full.params   # trained: per-token losses differ between short and long sequences
  micro = [jax.tree.map(lambda x: x[i * 4:(i + 1) * 4], batch) for i in range(4)]
  def grad(combine):
    def f(p):
      per = [task.loss_fn(p, m, None) for m in micro]
      return combine([l for l, _ in per], [a["weight"] for _, a in per])
    return jnp.concatenate([x.ravel() for x in jax.tree.leaves(jax.jit(jax.grad(f))(params))])
  g_means = grad(lambda ls, ws: sum(l / w for l, w in zip(ls, ws)) / len(ls))
  g_weighted = grad(lambda ls, ws: sum(ls) / sum(ws))
  assert float(jnp.linalg.norm(g_means - g_weighted)) > 0.05 * float(jnp.linalg.norm(g_weighted))

def test_batch_stats_update_and_are_shared_across_data_parallel_devices():
  l1, s1, _ = run(ct.bn_task, n_dev=1)
  l8, s8, _ = run(ct.bn_task, n_dev=8)
  stats = s1.model_state["batch_stats"]
  init = train_lib.build(ct.config(), ct.bn_task(ct.config()), mesh=mesh_of(1),
                         example_batch=next(ct.bn_task(ct.config()).make_train_iter())).init_fn()
  # running statistics moved away from the init (mean 0, var 1)
  assert not np.allclose(stats["BatchNorm_0"]["mean"], init.model_state["batch_stats"]["BatchNorm_0"]["mean"])
  # 8 data-parallel devices normalise with the statistics of the global batch (as one device does)
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  assert_trees_close(s8.model_state, s1.model_state)
  assert_trees_close(s8.params, s1.params)
  # the running mean after step 1 is 0.1 * the global batch mean of the pre-BN features
  cfg = ct.config()
  task = ct.bn_task(cfg)
  it = task.make_train_iter()
  setup = train_lib.build(cfg, task, mesh=mesh_of(8), example_batch=train_lib._peek(it))
  st0 = setup.init_fn()
  x = next(it)["x"]
  h = np.asarray(x @ np.asarray(st0.params["Dense_0"]["kernel"]) + np.asarray(st0.params["Dense_0"]["bias"]))
  st1, _ = setup.step_fn(st0, mesh_lib.global_batch({"x": x, "y": np.zeros(len(x), np.float32)},
                                                     setup.mesh, setup.rules))
  np.testing.assert_allclose(np.asarray(st1.model_state["batch_stats"]["BatchNorm_0"]["mean"]),
                             0.1 * h.mean(0), rtol=1e-5, atol=1e-6)


def _worker(workdir, total, mode):
  env = dict(os.environ, XLA_FLAGS=xla_flags(2), PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, os.path.join(ROOT, "tests/shared/bn_worker.py"), str(workdir),
                         str(total), mode], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_batch_stats_resume_bitwise_after_sigterm_and_restore_without_trainer(tmp_path):
  plain, cut = tmp_path / "plain", tmp_path / "cut"
  p = _worker(plain, 8, "plain")
  assert p.returncode == 0, p.stderr[-3000:]
  p = _worker(cut, 8, "sigterm@3")
  assert p.returncode == 0 and "STATUS preempted 3" in p.stdout, p.stderr[-3000:]
  p = _worker(cut, 8, "plain")
  assert p.returncode == 0 and "STATUS done 8 resumed_from=3" in p.stdout, p.stderr[-3000:]
  a, b = np.load(plain / "final.npz"), np.load(cut / "final.npz")
  assert sorted(a.files) == sorted(b.files) and any(k.startswith("batch_stats") for k in a.files)
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # restore() on this process's 8 devices (trained on 2): no trainer, no data, no optimizer state
  r = ckpt_lib.restore(str(plain))
  assert r.step == 8 and r.config.trainer.total_steps == 8
  for k, v in train_lib.flat(jax.device_get(r.params)).items():
    np.testing.assert_array_equal(v, a["params/" + k], err_msg=k)
  for k, v in train_lib.flat(jax.device_get(r.model_state)).items():
    np.testing.assert_array_equal(v, a[k], err_msg=k)
  # eval uses the running statistics: BatchNorm in inference mode with the restored batch_stats
  x = np.random.default_rng(1).normal(size=(4, 4)).astype(np.float32)
  y = ct.BNNet().apply(r.variables, x, train=False)
  h = x @ np.asarray(r.params["Dense_0"]["kernel"]) + np.asarray(r.params["Dense_0"]["bias"])
  bs, bn = r.model_state["batch_stats"]["BatchNorm_0"], r.params["BatchNorm_0"]
  hn = (h - bs["mean"]) / np.sqrt(bs["var"] + 1e-5) * bn["scale"] + bn["bias"]
  d1 = r.params["Dense_1"]
  np.testing.assert_allclose(y, (np.maximum(hn, 0) @ d1["kernel"] + d1["bias"])[:, 0], rtol=1e-5, atol=1e-5)
  # a later stage starts from this workdir through an init entry (family "workdir", detected): params and
  # batch_stats land in the new variables exactly; a prefix that names nothing / a non-workdir are named
  from shared.weights.init import apply_init_entries, init_entry, load_into
  fresh = jax.tree.map(np.zeros_like, jax.device_get(dict(r.variables)))
  got, reports = apply_init_entries({"stage1": init_entry(path=str(plain))}, fresh)
  assert reports["stage1"].family == "workdir" and reports["stage1"].ok
  assert any(k.startswith("batch_stats/") for k in reports["stage1"].loaded)
  for k, v in train_lib.flat(got).items():
    np.testing.assert_array_equal(v, a[k], err_msg=k)
  with pytest.raises(CheckpointError, match="needs a training workdir"):
    load_into(fresh, str(tmp_path), family="workdir")
  # an earlier step, and a missing one named
  assert ckpt_lib.restore(str(plain), step=4).step == 4
  with pytest.raises(CheckpointError, match="step 5"):
    ckpt_lib.restore(str(plain), step=5)
  with pytest.raises(CheckpointError, match="not found"):
    ckpt_lib.restore(str(tmp_path / "nothing"))
