"""shared/scaling/aot.py: the tiny UniTalking train step compiled for a v5p-8 slice (libtpu, no TPU), the
sharding visible in the per-device bytes, the batch_spec against a real batch, the errors."""
from __future__ import annotations

import sys
import types

import jax
import numpy as np
import pytest

from shared.errors import ConfigError
from shared.scaling import aot

TINY = "configs/unitalking/tiny.py"
# the tiny model with 1 layer on 8-frame clips: the same program, compiled in ~20 s (widths kept: with smaller
# arrays TPU tile padding, not the sharding, would set the per-device bytes)
SMALL = ["model.video.num_layers=1", "data.frames=8", "trainer.batch_size=8"]


def test_batch_spec_is_a_real_batch():
  from configs.unitalking.tiny import get_config
  from unitalking_jax.task import batch_spec, make_task
  cfg = get_config()
  cfg.data.frames, cfg.data.pca_fit_samples, cfg.trainer.batch_size = 8, 4, 4
  real = next(make_task(cfg).make_train_iter())
  spec = batch_spec(cfg)
  assert sorted(spec) == sorted(real)
  for k, s in spec.items():
    assert (tuple(s.shape), np.dtype(s.dtype)) == (real[k].shape, real[k].dtype), k
  assert spec["video"].shape[0] == 4


@pytest.fixture(scope="module")
def reports():
  pytest.importorskip("libtpu", reason="pip install 'jax[tpu]==<jax version>' compiles for TPU slices on a CPU")
  dp = aot.compile_report(TINY, "v5p-8", SMALL)                       # mesh data=-1: data-parallel over 4 chips
  fsdp = aot.compile_report(TINY, "v5p-8", SMALL + ["trainer.mesh.data=1", "trainer.mesh.fsdp=-1"])
  return dp, fsdp


def test_v5p8_report(reports):
  dp, fsdp = reports
  assert dp["num_devices"] == 4 and dp["device_kind"] == "TPU v5" and dp["compiled_for"] == "tpu"
  assert dp["mesh"]["data"] == 4 and fsdp["mesh"]["fsdp"] == 4
  m = dp["memory_per_device"]
  assert all(m[k] > 0 for k in ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes"))
  assert m["peak_bytes"] == m["argument_bytes"] + m["output_bytes"] - m["alias_bytes"] + m["temp_bytes"]
  assert dp["fits"] is True and dp["hbm_bytes"] == 95 * 2 ** 30
  # the arguments are the TrainState shards plus the batch shard (TPU tiling pads a little)
  batch_dev = sum(int(np.prod(b["shape"])) * np.dtype(b["dtype"]).itemsize for b in dp["batch"].values()) / 4
  assert dp["state_bytes_per_device"]["total"] + batch_dev <= m["argument_bytes"] < 1.1 * (
      dp["state_bytes_per_device"]["total"] + batch_dev)
  # donated state: every state byte is aliased by the new state
  assert m["alias_bytes"] >= 0.95 * dp["state_bytes_per_device"]["total"]
  assert dp["flops_per_device"] > 0 and dp["flops_global"] == pytest.approx(4 * dp["flops_per_device"])
  assert aot.format_report(dp).count("\n") >= 5
  import json
  json.dumps(dp)


def test_fsdp_divides_state_by_chips(reports):
  dp, fsdp = reports
  assert dp["params"] == fsdp["params"]
  s_dp, s_fsdp = dp["state_bytes_per_device"], fsdp["state_bytes_per_device"]
  # params and Adam moments: replicated under data parallelism, split 4 ways by fsdp (norms, biases stay whole)
  assert 3.0 < s_dp["total"] / s_fsdp["total"] <= 4.0
  m_dp, m_fsdp = dp["memory_per_device"], fsdp["memory_per_device"]
  assert 3.0 < m_dp["alias_bytes"] / m_fsdp["alias_bytes"] <= 4.2
  assert 2.8 < m_dp["argument_bytes"] / m_fsdp["argument_bytes"] <= 4.2
  # the same global work either way
  assert fsdp["flops_global"] == pytest.approx(dp["flops_global"], rel=0.2)


def test_h200x8_compiles():
  """The GPU target: XLA:GPU through the CUDA plugin when installed, else 8 CPU devices (the suite's)."""
  narrow = ["model.video.num_attention_heads=2", "model.video.attention_head_dim=16", "model.video.ffn_dim=64",
            "model.audio_ffn_dim=64", "model.video.freq_dim=32", "model.video.text_dim=16"]
  r = aot.compile_report(TINY, "h200x8", SMALL + narrow + ["trainer.mesh.data=1", "trainer.mesh.fsdp=-1"])
  assert r["num_devices"] == 8 and r["mesh"]["fsdp"] == 8 and r["compiled_for"] in ("cuda", "cpu")
  if r["compiled_for"] == "cpu":
    assert "temp bytes are the CPU compiler's" in r["exact"]
  assert r["memory_per_device"]["argument_bytes"] >= r["state_bytes_per_device"]["total"]
  assert r["fits"] and r["hbm_bytes"] == 141 * 10 ** 9


def test_out_of_memory_message():
  """XLA:TPU refuses a program over its HBM at compile time: the report takes the temporaries from the error."""
  msg = ("jax.errors.JaxRuntimeError: RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for "
         "HLO temporaries (450.68G) exceeds available HBM (95.74G).")
  got = aot._out_of_memory("Traceback ...\n" + msg)
  assert got["temp_bytes"] == int(450.68 * 2 ** 30) and got["available_bytes"] == int(95.74 * 2 ** 30)
  assert got["message"] == msg
  assert aot._out_of_memory("INTERNAL: something else") is None


def test_errors(tmp_path, monkeypatch):
  with pytest.raises(ConfigError, match="unknown topology 'v5p-7'.*v5p-8.*v5p-64.*v6e-256.*h200x8"):
    aot.compile_report(TINY, "v5p-7")
  with pytest.raises(ConfigError, match="no such file"):
    aot.compile_report(str(tmp_path / "missing.py"), "v5p-8")
  with pytest.raises(ConfigError, match="key=value"):
    aot.compile_report(TINY, "v5p-8", ["trainer.batch_size"])
  with pytest.raises(ConfigError):
    aot.compile_report(TINY, "v5p-8", ["trainer.no_such_key=1"])
  # a system whose task module has no batch_spec: named in the error
  cfg_dir = tmp_path / "configs" / "nobatch"
  cfg_dir.mkdir(parents=True)
  (cfg_dir / "c.py").write_text("from configs.unitalking.tiny import get_config  # noqa: F401\n")
  module = types.ModuleType("nobatch_jax.task")
  module.make_task = lambda cfg: None
  monkeypatch.setitem(sys.modules, "nobatch_jax", types.ModuleType("nobatch_jax"))
  monkeypatch.setitem(sys.modules, "nobatch_jax.task", module)
  with pytest.raises(ConfigError, match=r"nobatch_jax\.task has no batch_spec"):
    aot.compile_report(str(cfg_dir / "c.py"), "v5p-8")
  with pytest.raises(ConfigError, match="other_jax.task cannot be imported"):
    (tmp_path / "configs" / "other").mkdir()
    (tmp_path / "configs" / "other" / "c.py").write_text("from configs.unitalking.tiny import get_config  # noqa\n")
    aot.compile_report(str(tmp_path / "configs" / "other" / "c.py"), "v5p-8")
  assert jax.default_backend() == "cpu"
