"""Weights machinery: sharded safetensors, dtype on load, errors naming keys, CLI round trip."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from shared.errors import CheckpointError
from shared.weights import io, load_pretrained, save_pretrained
from shared.weights.__main__ import main as cli

NAME = "qwen3_qknorm_untied"


@pytest.fixture(scope="module")
def qwen(hf_dirs):
  model, d = hf_dirs[NAME]
  module, params = load_pretrained(d)
  return model, d, module, params


def test_sharded_roundtrip_and_index(qwen, tmp_path):
  model, _, module, params = qwen
  save_pretrained(module, params, str(tmp_path), max_shard_size="40KB")
  index = json.load(open(tmp_path / io.INDEX))
  shards = sorted(set(index["weight_map"].values()))
  assert len(shards) > 2 and all((tmp_path / s).exists() for s in shards)
  assert not (tmp_path / io.SINGLE).exists()
  # transformers reads the sharded export ...
  back = type(model).from_pretrained(str(tmp_path))
  for k, v in model.state_dict().items():
    np.testing.assert_array_equal(back.state_dict()[k].numpy(), v.numpy(), err_msg=k)
  # ... and so do we, bit-exactly
  _, again = load_pretrained(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, again, params)


def test_our_files_read_by_safetensors_library(qwen, tmp_path):
  _, _, module, params = qwen
  save_pretrained(module, params, str(tmp_path), dtype=jnp.bfloat16)
  tensors = load_file(str(tmp_path / io.SINGLE))  # the reference reader (its numpy API lacks bfloat16)
  w = tensors["model.layers.1.self_attn.q_proj.weight"]
  assert w.dtype == torch.bfloat16
  ours = np.asarray(params["layers"]["self_attn"]["q_proj"]["kernel"][1]).T
  np.testing.assert_array_equal(w.float().numpy(), ours.astype(ml_dtypes.bfloat16).astype(np.float32))
  assert json.load(open(tmp_path / "config.json"))["dtype"] == "bfloat16"


def test_dtype_on_load(qwen):
  _, d, _, params = qwen
  _, p16 = load_pretrained(d, dtype=jnp.bfloat16)
  leaves = jax.tree.leaves(p16)
  assert all(x.dtype == jnp.bfloat16 for x in leaves)
  np.testing.assert_array_equal(np.asarray(p16["norm"]["scale"], np.float32),
                                np.asarray(params["norm"]["scale"]).astype(ml_dtypes.bfloat16).astype(np.float32))


def _rewrite(src, dst, edit):
  """Copies a checkpoint dir, applying edit(dict of tensors) to the weights."""
  os.makedirs(dst, exist_ok=True)
  cfg = json.load(open(os.path.join(src, "config.json")))
  json.dump(cfg, open(os.path.join(dst, "config.json"), "w"))
  r = io.SafetensorsReader(src)
  tensors = {k: r.get(k) for k in r.keys()}
  edit(tensors)
  io.write_safetensors(os.path.join(dst, io.SINGLE),
                       [(k, v.shape, v.dtype, lambda v=v: v) for k, v in tensors.items()])


def test_mismatches_raise_checkpoint_error_naming_keys(qwen, tmp_path):
  _, d, _, _ = qwen

  def drop(t):
    del t["model.layers.1.mlp.up_proj.weight"]
  _rewrite(d, tmp_path / "a", drop)
  with pytest.raises(CheckpointError, match=r"missing keys \['model\.layers\.1\.mlp\.up_proj\.weight'\]"):
    load_pretrained(str(tmp_path / "a"))

  def extra(t):
    t["model.layers.0.extra.weight"] = np.zeros(3, np.float32)
  _rewrite(d, tmp_path / "b", extra)
  with pytest.raises(CheckpointError, match=r"unexpected keys \['model\.layers\.0\.extra\.weight'\]"):
    load_pretrained(str(tmp_path / "b"))

  def reshape(t):
    t["model.layers.0.self_attn.k_norm.weight"] = np.ones(7, np.float32)
  _rewrite(d, tmp_path / "c", reshape)
  with pytest.raises(CheckpointError, match=r"model\.layers\.0\.self_attn\.k_norm\.weight: \(7,\)"):
    load_pretrained(str(tmp_path / "c"))

  with pytest.raises(CheckpointError, match="config.json"):
    load_pretrained(str(tmp_path / "nothing_here"))


def test_cli_import_export_roundtrip(qwen, tmp_path):
  model, d, _, params = qwen
  assert cli(["import", d, str(tmp_path / "ours")]) == 0
  assert cli(["export", str(tmp_path / "ours"), str(tmp_path / "hf")]) == 0
  back = type(model).from_pretrained(str(tmp_path / "hf"))
  for k, v in model.state_dict().items():
    np.testing.assert_array_equal(back.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def test_real_llama32_3b_config_maps_without_allocating():
  """A transformers-4.x style config.json (rope_scaling + rope_theta, eos list) of LLaMA 3.2-3B: the
  module and its param shapes follow SPECS.md (shapes only, via eval_shape)."""
  from shared.weights import abstract_params, family_for_config
  cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 3072,
         "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8,
         "head_dim": 128, "vocab_size": 128256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
         "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                          "original_max_position_embeddings": 8192, "rope_type": "llama3"},
         "tie_word_embeddings": True, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
         "torch_dtype": "bfloat16", "max_position_embeddings": 131072}
  fam = family_for_config(cfg)
  module = fam.from_config(cfg, compute_dtype="bfloat16")
  c = module.config
  assert c.eos_token_id == (128001, 128008, 128009) and c.dtype == "bfloat16"
  assert dict(c.rope_scaling) == {k: v for k, v in cfg["rope_scaling"].items()}
  shapes = abstract_params(module)
  assert shapes[("layers", "self_attn", "k_proj", "kernel")] == (28, 3072, 1024)
  assert shapes[("layers", "mlp", "down_proj", "kernel")] == (28, 8192, 3072)
  assert ("lm_head", "kernel") not in shapes
  assert sum(int(np.prod(s)) for s in shapes.values()) == 3_212_749_824  # LLaMA 3.2-3B parameter count
  out = fam.to_config(module)
  assert out["rope_parameters"]["rope_type"] == "llama3" and out["tie_word_embeddings"] is True


def test_load_straight_into_shardings(qwen):
  """Each tensor goes to its FSDP/tensor sharding as it is read (no unsharded copy of the tree on device)."""
  import flax.linen as nn
  from shared.mesh import LOGICAL_RULES
  _, d, module, params = qwen
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
  rules = tuple((n, a if a is None or all(x in mesh.axis_names for x in ((a,) if isinstance(a, str) else a))
                 else None) for n, a in LOGICAL_RULES if n != "vocab") + (("vocab", None),)  # vocab 101 is odd
  boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))["params"]
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  _, sharded = load_pretrained(d, shardings=shardings)
  q = sharded["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert q.addressable_shards[0].data.shape == (2, 20, 48)
  jax.tree.map(np.testing.assert_array_equal, sharded, params)


def test_read_state_dict_torch_npz_safetensors_and_errors(tmp_path):
  """One reader of weights files for every family and metric: torch checkpoints (wrapped, bf16), .npz,
  .safetensors give the same arrays; broken files raise CheckpointError naming the file."""
  w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
  b = torch.tensor([0.5, -1.0], dtype=torch.bfloat16)
  torch.save({"epoch": 3, "state_dict": {"model": {"w": w, "b": b, "step": 7}}}, tmp_path / "ck.pt")
  np.savez(tmp_path / "ck.npz", w=w.numpy(), b=b.float().numpy())
  from safetensors.torch import save_file
  save_file({"w": w, "b": b.float()}, str(tmp_path / "ck.safetensors"))
  for name in ("ck.pt", "ck.npz", "ck.safetensors"):
    sd = io.read_state_dict(str(tmp_path / name))
    assert sorted(sd) == ["b", "w"], name
    np.testing.assert_array_equal(sd["w"], w.numpy())
    assert sd["b"].dtype == np.float32 and sd["b"].tolist() == [0.5, -1.0]
  raw = io.load_torch_state_dict(str(tmp_path / "ck.pt"))
  assert raw["b"].dtype == torch.bfloat16                     # the raw reader keeps torch's dtypes (lazy readers)
  (tmp_path / "bad.pt").write_bytes((tmp_path / "ck.pt").read_bytes()[:50])
  with pytest.raises(CheckpointError, match="bad.pt.*weights_only"):
    io.read_state_dict(str(tmp_path / "bad.pt"))
  torch.save([w], tmp_path / "list.pt")
  with pytest.raises(CheckpointError, match="list.pt holds a list"):
    io.read_state_dict(str(tmp_path / "list.pt"))
  with pytest.raises(CheckpointError, match="missing.pt not found"):
    io.read_state_dict(str(tmp_path / "missing.pt"))
