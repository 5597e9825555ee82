"""The tiny tri-modal train step (stage 2: SLT / VSR / ASR / AVSR mixed, every encoder, LoRA dropout on) on 8
simulated devices, mesh data 2 x fsdp 4 (batch over both, the LLM weights' embed axis over fsdp, the encoders kept
whole: trainer.replicate), equals the same step
on 1 device for the same batch and initial TrainState: the same loss, token count, gradient norm and updated
params (fp32, rel 1e-5)."""
import jax
import ml_collections
import numpy as np
import pytest

from configs.trimodal.tiny import get_config
from shared import mesh as mesh_lib
from shared import train as train_lib
from trimodal_jax import data as data_lib
from trimodal_jax import task as task_lib


def _mesh(data, fsdp):
  cfg = ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=1, sequence=1))
  return mesh_lib.make_mesh(cfg, devices=jax.devices()[:data * fsdp])


def _step(cfg, task, batch, mesh, host_state):
  """One trainer step from `host_state` (the same initial TrainState for every mesh) -> (params, metrics,
  {param: PartitionSpec})."""
  setup = train_lib.build(cfg, task, mesh=mesh, example_batch=batch)
  state = jax.device_put(host_state, setup.state_shardings)
  shardings = {k: s.spec for k, s in train_lib.flat(setup.state_shardings.params).items()}
  state, m = setup.step_fn(state, mesh_lib.global_batch(batch, setup.mesh, setup.rules))
  return jax.device_get(state.params), {k: float(v) for k, v in m.items()}, shardings


def _init(cfg, task, batch, mesh):
  return jax.device_get(train_lib.build(cfg, task, mesh=mesh, example_batch=batch).init_fn())


def _close(a, b, rtol=1e-5, atol=1e-7):
  """assert_allclose leaf by leaf -> the largest |a - b| / (|b| + 1e-3) over all leaves."""
  fa, fb = train_lib.flat(a), train_lib.flat(b)
  assert fa.keys() == fb.keys()
  worst = 0.0
  for k in fa:
    x, y = np.asarray(fa[k], np.float64), np.asarray(fb[k], np.float64)
    if rtol is not None:
      np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=k)
    worst = max(worst, float(np.max(np.abs(x - y) / (np.abs(y) + 1e-3))))
  return worst


@pytest.mark.slow   # two compiles of the tiny step: ~80 s of CPU on the shared 2-core box
def test_train_step_on_8_devices_equals_1():
  assert jax.device_count() >= 8
  cfg = get_config("stage2")
  cfg.data.update(dict(num_samples=16, frame_buckets=(64,), label_buckets=(8,), eval_samples=0, lip_size=20, crop=16,
                       sign_frame_size=32, sign_size=16))
  cfg.trainer.batch_size = 8
  task = task_lib.make_task(cfg)
  tok = data_lib.tokenizer(cfg)
  srcs = data_lib.sources(cfg.data, "train")
  tasks = ("slt", "vsr", "asr", "avsr")          # a mixed batch, every encoder used, augmentations on
  ex = [data_lib.prepare(i, tasks[i % 4], np.random.default_rng(i), cfg=cfg, srcs=srcs, tok=tok) for i in range(8)]
  batch = data_lib.collate(ex, cfg=cfg, tok=tok)
  host = _init(cfg, task, batch, _mesh(1, 1))
  p1, m1, _ = _step(cfg, task, batch, _mesh(1, 1), host)
  p8, m8, sh = _step(cfg, task, batch, _mesh(2, 4), host)
  assert any("fsdp" in str(s) for s in sh.values())                       # some weights really are sharded
  # ... the LLM's; the encoders are kept whole (trainer.replicate): FSDP over the LLM, data over the encoders
  enc = {k: s for k, s in sh.items() if k.startswith(("sign_encoder/", "lip_encoder/", "audio_encoder/"))}
  assert enc and all(all(a is None for a in s) for s in enc.values()), enc
  assert any("fsdp" in str(s) for k, s in sh.items() if k.startswith("llm/"))
  assert m1["loss"] > 0 and m8["loss_weight"] == m1["loss_weight"] == float(batch["target_len"].sum())
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
  np.testing.assert_allclose(m8["grad_norm"], m1["grad_norm"], rtol=1e-5)
  assert _close(p1, host.params, rtol=None) > 1e-4                         # the step changed the weights
  # the config's own step-0 rate (tri-stage init_ratio 0.01: 1e-5). Adam's first step is ~ lr * sign(g), so an
  # element whose gradient is ~1e-8 moves by up to 4e-4 lr between the meshes (measured at lr 1e-3: 3.9e-7 on one
  # of 16384 elements; with the 4-stage sign stand-in 1.4e-8 at lr 1e-5 on one of 32768): atol 3e-8 = 3e-3 lr
  _close(p8, p1, rtol=1e-5, atol=3e-8)
