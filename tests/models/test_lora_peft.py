"""LoRA: peft adapters both ways with identical logits, merge == unmerged, sharded training step."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import traverse_util

from shared.mesh import LOGICAL_RULES
from shared.models.llm import LLM, LLMConfig
from shared.nn import lora as lora_lib
from shared.weights import load_pretrained, save_adapter, save_pretrained

BASE = "llama_gqa_llama3_tied"
RTOL = 1e-5


def rel_err(a, b):
  return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def fwd(module, params, ids):
  return jax.jit(lambda p, x: module.apply({"params": p}, x))(params, ids)


@pytest.fixture(scope="module")
def peft_setup(hf_dirs, tmp_path_factory):
  from peft import LoraConfig, get_peft_model
  from transformers import LlamaForCausalLM
  _, base_dir = hf_dirs[BASE]
  torch.manual_seed(1)
  base = LlamaForCausalLM.from_pretrained(base_dir).eval()
  pm = get_peft_model(base, LoraConfig(r=4, lora_alpha=12, lora_dropout=0.05, init_lora_weights=False,
                                       target_modules=["q_proj", "v_proj", "down_proj"])).eval()
  adapter_dir = str(tmp_path_factory.mktemp("adapter"))
  pm.save_pretrained(adapter_dir)
  ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(3))
  with torch.no_grad():
    ref = pm(input_ids=ids).logits.numpy()
  module, params = load_pretrained(adapter_dir, base=base_dir)
  return base_dir, adapter_dir, ids, ref, module, params


def test_peft_adapter_imports_with_identical_logits(peft_setup):
  _, _, ids, ref, module, params = peft_setup
  assert module.config.lora.rank == 4 and module.config.lora.scale == 3.0
  assert set(module.config.lora.targets) == {"q_proj", "v_proj", "down_proj"}
  assert params["layers"]["mlp"]["down_proj"]["lora_a"].shape == (3, 80, 4)
  out = fwd(module, params, jnp.asarray(ids.numpy()))
  assert rel_err(out, ref) < RTOL


def test_our_adapter_loads_in_peft(peft_setup, tmp_path):
  from peft import PeftModel
  from transformers import LlamaForCausalLM
  base_dir, _, ids, ref, module, params = peft_setup
  # change the adapter so the export is not just a copy of the imported file
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x * 1.5 if p[-1].key in ("lora_a", "lora_b") else x, params)
  save_adapter(module, params, str(tmp_path), base_model_name_or_path=base_dir)
  pm = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base_dir), str(tmp_path)).eval()
  with torch.no_grad():
    theirs = pm(input_ids=ids).logits.numpy()
  ours = fwd(module, params, jnp.asarray(ids.numpy()))
  assert rel_err(ours, theirs) < RTOL
  assert rel_err(ours, ref) > 1e-3  # the scaled adapter really differs


def test_merged_export_equals_unmerged(peft_setup, tmp_path):
  from transformers import LlamaForCausalLM
  _, _, ids, ref, module, params = peft_setup
  save_pretrained(module, params, str(tmp_path), lora="merge")
  merged_hf = LlamaForCausalLM.from_pretrained(str(tmp_path)).eval()
  with torch.no_grad():
    theirs = merged_hf(input_ids=ids).logits.numpy()
  assert rel_err(theirs, ref) < RTOL
  # in JAX too: merge -> plain module; merge(keep) -> unmerge is the identity
  plain = module.clone(config=module.config.replace(lora=None))
  merged = lora_lib.merge(params, module.config.lora)
  assert "lora_a" not in merged["layers"]["self_attn"]["q_proj"]
  assert rel_err(fwd(plain, merged, jnp.asarray(ids.numpy())), ref) < RTOL
  back = lora_lib.unmerge(lora_lib.merge(params, module.config.lora, keep_lora=True), module.config.lora)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), back, params)


def _mesh_rules(mesh):
  """LOGICAL_RULES restricted to the axes this mesh has."""
  def ok(a):
    return a is None or all(x in mesh.axis_names for x in ((a,) if isinstance(a, str) else a))
  return tuple((n, a if ok(a) else None) for n, a in LOGICAL_RULES)


@pytest.mark.slow
def test_lora_train_step_sharded_equals_single_device():
  """FSDP + tensor rules on a (2, 2, 2) mesh, remat on: one adam step equals the 1-device step;
  only LoRA parameters change."""
  cfg = LLMConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=8, qk_norm=True,
                  lora=lora_lib.LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "k_proj", "v_proj", "o_proj")))
  model, model_remat = LLM(cfg), LLM(cfg.replace(remat_policy="dots"))
  ids = jax.random.randint(jax.random.key(0), (8, 12), 0, 64)
  boxed = model.init(jax.random.key(1), ids[:1])["params"]
  params = nn.meta.unbox(boxed)
  # non-zero lora_b so that lora_a gets a gradient too
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: 0.05 * jax.random.normal(jax.random.key(2), x.shape) if p[-1].key == "lora_b" else x, params)
  labels = jax.tree.map(lambda m: "lora" if m else "frozen", lora_lib.lora_mask(params))
  tx = optax.multi_transform({"lora": optax.adam(1e-2), "frozen": optax.set_to_zero()}, labels)

  def make_step(m):
    def step(p, opt, x):
      def loss(p):
        logits = m.apply({"params": p}, x[:, :-1])
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), x[:, 1:, None], -1))
      l, g = jax.value_and_grad(loss)(p)
      upd, opt = tx.update(g, opt, p)
      return optax.apply_updates(p, upd), opt, l
    return step

  opt0 = tx.init(params)
  p1, _, l1 = jax.jit(make_step(model))(params, opt0, ids)

  # Auto axes, as shared.mesh.make_mesh builds them: shardings come from the logical rules
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
  rules = _mesh_rules(mesh)
  p_sh = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  assert p_sh["layers"]["self_attn"]["q_proj"]["kernel"].spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  x_sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    sp = jax.device_put(params, p_sh)
    step = jax.jit(make_step(model_remat), in_shardings=(p_sh, None, x_sh), out_shardings=(p_sh, None, None))
    p8, _, l8 = step(sp, opt0, jax.device_put(ids, x_sh))
  assert len(p8["layers"]["self_attn"]["q_proj"]["kernel"].sharding.device_set) == 8
  np.testing.assert_allclose(l8, l1, rtol=1e-6)
  flat0, flat1, flat8 = (traverse_util.flatten_dict(t) for t in (params, p1, p8))
  for k in flat0:
    np.testing.assert_allclose(np.asarray(flat8[k]), np.asarray(flat1[k]), rtol=1e-5, atol=1e-6, err_msg=str(k))
    changed = not np.array_equal(np.asarray(flat1[k]), np.asarray(flat0[k]))
    assert changed == lora_lib.is_lora_path(k), k


def test_cli_adapter_roundtrip_and_drop(peft_setup, tmp_path):
  """CLI import of base + peft adapter, export of base (lora dropped) + adapter: peft reproduces the logits."""
  from peft import PeftModel
  from transformers import LlamaForCausalLM
  from shared.weights.__main__ import main as cli
  base_dir, adapter_dir, ids, ref, _, _ = peft_setup
  assert cli(["import", base_dir, str(tmp_path / "ours"), "--adapter", adapter_dir]) == 0
  assert cli(["export", str(tmp_path / "ours"), str(tmp_path / "base"), "--lora", "drop",
              "--adapter-out", str(tmp_path / "adapter")]) == 0
  original = LlamaForCausalLM.from_pretrained(base_dir)
  base = LlamaForCausalLM.from_pretrained(str(tmp_path / "base"))
  for k, v in original.state_dict().items():
    np.testing.assert_array_equal(base.state_dict()[k].numpy(), v.numpy(), err_msg=k)
  pm = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
  with torch.no_grad():
    assert rel_err(pm(input_ids=ids).logits.numpy(), ref) < RTOL
