"""shared.nn.remat: the one policy table, its errors, and the activation names the shared blocks carry."""
from __future__ import annotations

import contextlib
import io

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared import config as config_lib
from shared.errors import ConfigError
from shared.models import wan_dit as W
from shared.models.llm import LLM, LLMConfig
from shared.models.umt5 import UMT5Config, UMT5Encoder
from shared.nn import remat as R

CP = jax.checkpoint_policies
WAN = W.WanDiTConfig(num_attention_heads=2, attention_head_dim=8, text_dim=8, num_layers=2, in_channels=4,
                     out_channels=4, freq_dim=8, ffn_dim=16, patch_size=(1, 2, 2))


def _saved(f, *args) -> list[str]:
  """The residuals the backward pass of f keeps, one description per line."""
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    jax.ad_checkpoint.print_saved_residuals(f, *args)
  return buf.getvalue().splitlines()


def _scan_residuals(f, *args, layers: int = 2) -> list[str]:
  """Shapes of the per-layer residuals a scanned layer stack keeps ([layers, ...] each)."""
  shapes = [line.split()[0] for line in _saved(f, *args) if "output of scan" in line]
  return sorted(s for s in shapes if s.split("[")[1].startswith(f"{layers},"))


def _close(a, b, tol=1e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def test_table_keeps_the_old_names():
  assert R.remat_policy("none") is None
  for name in ("full", "nothing", "nothing_saveable"):     # recompute everything but the block inputs
    assert R.remat_policy(name) is CP.nothing_saveable
  assert R.remat_policy("dots") is R.remat_policy("dots_saveable") is CP.dots_saveable
  assert R.remat_policy("dots_no_batch") is CP.dots_with_no_batch_dims_saveable
  # trainer.remat takes exactly the models' names
  assert set(config_lib.REMAT_POLICIES) == set(R.POLICIES)
  assert R.remat(nn.Dense, "none") is nn.Dense
  assert R.remat(nn.Dense, "save_residual") is not nn.Dense


def test_unknown_policy_names_the_key():
  with pytest.raises(ConfigError, match=r"trainer\.remat.*'bogus'.*save_attention_out"):
    R.check_remat_policy("bogus", key="trainer.remat")
  for make in (lambda: WAN.replace(remat_policy="bogus"), lambda: LLMConfig(remat_policy="bogus"),
               lambda: UMT5Config(remat_policy="bogus")):
    with pytest.raises(ConfigError, match="remat_policy.*bogus"):
      make()
  t = config_lib.trainer_config()
  t.remat = "bogus"
  with pytest.raises(ConfigError, match=r"trainer\.remat"):
    config_lib.validate_trainer(t)
  for name in R.POLICIES:
    t.remat = name
    config_lib.validate_trainer(t)


def test_wan_block_name_policies_save_the_named_activations():
  """jax.checkpoint(save_only_these_names(...)) around one WanBlock keeps exactly the named activations
  (traced on abstract values: nothing is compiled)."""
  block = W.WanBlock(WAN)
  sds = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
  h, ctx, temb, angles = sds(1, 8, WAN.dim), sds(1, 3, WAN.dim), sds(1, 1, 6, WAN.dim), sds(1, 8, 4)
  params = jax.eval_shape(block.init, jax.random.key(0), h, ctx, temb, angles)
  loss = lambda p, *args: jnp.sum(block.apply(p, *args) ** 2)  # noqa: E731

  def named(*names):
    lines = _saved(jax.checkpoint(loss, policy=CP.save_only_these_names(*names)), params, h, ctx, temb, angles)
    return [sum(f"named '{n}'" in line for line in lines) for n in R.NAMES]

  assert named(R.ATTENTION_OUT) == [2, 0]                  # self- and cross-attention outputs
  attn, res = named(R.RESIDUAL)
  assert attn == 0 and res >= 2                           # after attn1, attn2 (and the FFN: the loss uses it)
  assert named() == [0, 0]
  assert named(R.ATTENTION_OUT, R.RESIDUAL) == [2, res]


def _wan_inputs():
  ks = jax.random.split(jax.random.key(0), 2)
  x, t = jax.random.normal(ks[0], (1, 2, 4, 4, 4)), jnp.array([3.0])
  return x, t, jax.random.normal(ks[1], (1, 3, WAN.text_dim))


def _wan_loss(name):
  model = W.WanDiT(WAN.replace(remat_policy=name))
  return lambda p, x, t, text: jnp.mean(model.apply(p, x, t, text) ** 2)


def test_wan_dit_name_policies_same_loss_and_gradients():
  x, t, text = _wan_inputs()
  rng = np.random.default_rng(0)   # random params without compiling init
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), s.dtype),
                        jax.eval_shape(W.WanDiT(WAN).init, jax.random.key(2), x, t, text))
  names = ("none", "save_attention_out_and_residual")
  both = jax.jit(lambda *a: [jax.value_and_grad(_wan_loss(n))(*a) for n in names])(params, x, t, text)
  for name, got in zip(names[1:], both[1:]):
    _close(got, both[0])


@pytest.mark.parametrize("policy", ["full", "dots", "save_attention_out", "save_residual",
                                    "save_attention_out_and_residual", "offload_residual"])
def test_wan_dit_scanned_residuals(policy):
  """Inside nn.scan the names are gone from the listing; the per-layer residuals' shapes tell them apart."""
  x, t, text = (jax.ShapeDtypeStruct(a.shape, a.dtype) for a in _wan_inputs())
  params = jax.eval_shape(W.WanDiT(WAN).init, jax.random.key(2), x, t, text)
  n, l, d, hd = WAN.num_layers, 8, WAN.dim, (WAN.num_attention_heads, WAN.attention_head_dim)
  carry = f"f32[{n},1,{l},{d}]"
  att = f"f32[{n},1,{l},{hd[0]},{hd[1]}]"
  expected = {"full": [carry], "save_attention_out": [carry] + [att] * 2, "save_residual": [carry] * 3,
              "save_attention_out_and_residual": [carry] * 3 + [att] * 2,
              "offload_residual": [carry] + [att] * 2 + [f"f32<host>[{n},1,{l},{d}]"] * 2}
  got = _scan_residuals(_wan_loss(policy), params, x, t, text)
  if policy == "dots":
    assert len(got) > len(expected["save_attention_out_and_residual"])
  else:
    assert got == sorted(expected[policy])


def test_llm_and_mha_layers_carry_the_names():
  ids = jax.ShapeDtypeStruct((1, 5), jnp.int32)
  llm = LLMConfig(vocab_size=17, hidden_size=16, intermediate_size=24, num_layers=2, num_heads=2, num_kv_heads=1,
                  head_dim=8)
  t5 = UMT5Config(vocab_size=17, d_model=16, d_kv=8, num_heads=2, d_ff=24, num_layers=2)
  for cfg, cls in ((llm, LLM), (t5, UMT5Encoder)):      # shared.nn.attention / shared.nn.mha
    params = jax.eval_shape(cls(cfg).init, jax.random.key(0), ids)
    model = cls(cfg.replace(remat_policy="save_attention_out_and_residual"))
    f = lambda p, ids, model=model: jnp.mean(model.apply(p, ids) ** 2)  # noqa: E731
    carry, att = "f32[2,1,5,16]", "f32[2,1,5,2,8]"          # [layers, B, L, E], [layers, B, L, H, Dh]
    # the layer inputs (the carry), the attention output and the residual after attention
    assert _scan_residuals(f, params, ids) == sorted([carry] * 2 + [att]), cls.__name__
