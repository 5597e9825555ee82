"""KL autoencoder vs diffusers' AutoencoderKL (small random configs), both directions.

Three configs, images channels last [B, H, W, C] on our side, [B, C, H, W] on theirs:
  sd     SD-style: 3 channels, z 4, 3 levels (4x down), 1 resnet per level, 16x16 images -> [B, 4, 4, 4]
  mel    AudioLDM-style: 1 channel, z 8, 3 levels, 2 resnets per level; mel 32 frames x 16 bins -> [B, 8, 4, 8]
  flux   SD3/Flux-style structure: no quant_conv / post_quant_conv, no mid-block attention, shift_factor;
         gelu resnets (another activation), 2 levels, 16x24 images -> [B, 8, 12, 4]
Torch models are random (seeded) with perturbed GroupNorm weights/biases; fp32 tolerance 1e-5 relative
(max abs diff / max abs reference). One jitted function per config (encode + decode) serves every test.
Full-size SDXL / AudioLDM name tables are checked against diffusers models built on the meta device.
"""
from __future__ import annotations

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import shared.weights
import torch
from diffusers import AutoencoderKL as TorchAE
from flax import traverse_util
from safetensors.torch import load_file, save_file

from shared.errors import CheckpointError, ConfigError
from shared.models import autoencoder_kl as A
from shared.weights import autoencoder_kl_family as F

_ENC, _DEC = ["DownEncoderBlock2D"], ["UpDecoderBlock2D"]
CONFIGS = {
    "sd": (dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 16, 16], layers_per_block=1,
                norm_num_groups=4, down_block_types=_ENC * 3, up_block_types=_DEC * 3), (16, 16)),
    "mel": (dict(in_channels=1, out_channels=1, latent_channels=8, block_out_channels=[8, 16, 16], layers_per_block=2,
                 norm_num_groups=4, down_block_types=_ENC * 3, up_block_types=_DEC * 3, sample_size=32,
                 scaling_factor=0.9228), (32, 16)),
    "flux": (dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 16], layers_per_block=1,
                  norm_num_groups=4, down_block_types=_ENC * 2, up_block_types=_DEC * 2, act_fn="gelu",
                  use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=False,
                  scaling_factor=0.3611, shift_factor=0.1159, force_upcast=False), (16, 24)),
}
BATCH = 2
# Tiny models run in milliseconds; what costs is compiling them: skip LLVM's optimisations (about 2x faster).
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _cl(x):  # ours [B, H, W, C] -> torch layout [B, C, H, W]
  return np.asarray(x).transpose(0, 3, 1, 2)


def _tl(x):  # torch layout -> ours
  return jnp.asarray(np.asarray(x).transpose(0, 2, 3, 1))


def _public(c):
  return {k: v for k, v in dict(c).items() if not k.startswith("_")}


class Case:
  def __init__(self, name):
    kwargs, (h, w) = CONFIGS[name]
    torch.manual_seed(0)
    self.torch_model = TorchAE(**kwargs).eval()
    with torch.no_grad():  # GroupNorm weights 1 / biases 0 at init: make them matter
      for key, p in self.torch_model.named_parameters():
        if "norm" in key:
          p.add_(0.3 * torch.randn_like(p))
    self.config = F.config_from_diffusers(dict(self.torch_model.config))
    self.model = A.AutoencoderKL(self.config)
    self.x = torch.rand(BATCH, kwargs["in_channels"], h, w, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
      post = self.torch_model.encode(self.x).latent_dist
      self.mean, self.logvar = post.mean.numpy(), post.logvar.numpy()
      self.image = self.torch_model.decode(post.mean).sample.numpy()
    model = self.model
    # One compiled function per config: (mean, logvar) of x and the decoding of z.
    self.run = _jit(lambda p, x, z: (model.apply({"params": p}, x, method=A.AutoencoderKL.encode),
                                        model.apply({"params": p}, z, method=A.AutoencoderKL.decode)))

  def outputs(self, params, x=None, z=None):
    """(mean, logvar, image) of ours in torch layout, for torch inputs x [B, C, H, W] and z [B, z, h, w]."""
    (mean, logvar), image = self.run(params, _tl(self.x if x is None else x), _tl(self.mean if z is None else z))
    return _cl(mean), _cl(logvar), _cl(image)


@functools.lru_cache(maxsize=None)
def _case(name):
  return Case(name)


@pytest.fixture(scope="module", params=list(CONFIGS))
def case(request):
  return _case(request.param)


def test_import_matches_diffusers(case, tmp_path):
  case.torch_model.save_pretrained(str(tmp_path))
  module, params = shared.weights.load_pretrained(str(tmp_path))
  assert isinstance(module, A.AutoencoderKL) and module.config == case.config
  mean, logvar, image = case.outputs(params)
  h, w = case.x.shape[2:]
  s = case.config.downsample_factor
  assert mean.shape == logvar.shape == (BATCH, case.config.latent_channels, h // s, w // s) == case.mean.shape
  assert image.shape == case.image.shape
  assert _rel(mean, case.mean) < 1e-5
  assert _rel(logvar, case.logvar) < 1e-5
  assert _rel(image, case.image) < 1e-5
  # the in-memory importer and the family's own directory reader give the same params
  in_memory = F.import_autoencoder_kl(case.torch_model.state_dict(), case.config)
  jax.tree.map(np.testing.assert_array_equal, params, in_memory)
  _, own = F.load_autoencoder_kl(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, params, own)


def _random_params(config, seed=3):
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape in F.param_shapes(config).items():
    if path[-1] == "kernel":
      v = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
    elif path[-1] == "scale":
      v = 1.0 + 0.2 * rng.normal(size=shape)
    else:
      v = 0.1 * rng.normal(size=shape)
    flat[path] = jnp.asarray(v, jnp.float32)
  return traverse_util.unflatten_dict(flat)


def test_export_loads_in_diffusers(case, tmp_path):
  params = _random_params(case.config)
  shared.weights.save_pretrained(case.model, params, str(tmp_path))
  theirs = TorchAE.from_pretrained(str(tmp_path)).eval()
  assert _public(theirs.config) == _public(case.torch_model.config)
  state_dict = F.export_autoencoder_kl(params, case.config)
  assert set(theirs.state_dict()) == set(state_dict)
  for k, v in theirs.state_dict().items():
    np.testing.assert_array_equal(v.numpy(), state_dict[k], err_msg=k)
  with torch.no_grad():
    post = theirs.encode(case.x).latent_dist
    image = theirs.decode(post.mean).sample.numpy()
  mean, logvar, ours = case.outputs(params, z=post.mean.numpy())
  assert _rel(mean, post.mean.numpy()) < 1e-5
  assert _rel(logvar, post.logvar.numpy()) < 1e-5
  assert _rel(ours, image) < 1e-5


def test_config_json_round_trip(tmp_path):
  """diffusers' config.json -> ours -> written back: the same keys and values, unmodelled keys carried."""
  case = _case("mel")
  case.torch_model.save_pretrained(str(tmp_path / "in"))
  cfg = json.loads((tmp_path / "in" / "config.json").read_text())
  cfg["some_future_key"] = [1, 2]
  module = F.from_config(cfg)
  assert module.config == case.config
  written = F.to_config(module)
  assert written["_class_name"] == "AutoencoderKL"
  assert _public(written) == _public(cfg)
  over = F.from_config(cfg, compute_dtype=jnp.bfloat16, attention_implementation="xla").config
  assert over.dtype == "bfloat16" and over.attention_implementation == "xla"
  with pytest.raises(ConfigError, match="unknown overrides.*remat_policy"):
    F.from_config(cfg, remat_policy="full")


@pytest.mark.parametrize("preset", ["sdxl", "audioldm"])
def test_full_size_tables_match_diffusers(preset):
  config = A.sdxl_config() if preset == "sdxl" else A.audioldm_config()
  kwargs = _public(F.config_to_diffusers(config))
  with torch.device("meta"):
    theirs = TorchAE(**kwargs)
  assert F.config_from_diffusers(dict(theirs.config)) == config
  expected = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
  module = A.AutoencoderKL(config)
  rows, ours, ignore = shared.weights.family_table(module)   # what load_pretrained / save_pretrained use
  shared.weights.table.check_coverage(rows, ours)
  assert not ignore
  specs = shared.weights.table.export_specs(rows, {k: jax.ShapeDtypeStruct(v, jnp.float32) for k, v in ours.items()})
  assert {key: tuple(shape) for key, shape, _, _ in specs} == expected
  n = sum(int(np.prod(s)) for s in expected.values())
  # SDXL VAE 83.65M (8x down, z 4); AudioLDM mel VAE 55.4M (mel [B,1,T,64] -> latent [B,8,T/4,16])
  if preset == "sdxl":
    assert abs(n - 83.65e6) < 0.01e6 and config.downsample_factor == 8 and config.scaling_factor == 0.13025
    x = jax.ShapeDtypeStruct((1, 1024, 1024, 3), jnp.float32)
    want = (1, 128, 128, 4)
  else:
    assert abs(n - 55.4e6) < 0.05e6 and config.downsample_factor == 4
    x = jax.ShapeDtypeStruct((1, 1024, 64, 1), jnp.float32)   # 10.24 s of 64-bin mel, channels last
    want = (1, 256, 16, 8)
  mean, logvar = jax.eval_shape(lambda x: module.init_with_output(jax.random.PRNGKey(0), x,
                                                                    method=A.AutoencoderKL.encode)[0], x)
  assert mean.shape == logvar.shape == want
  # Every parameter carries one logical axis name per dimension, and the names map to mesh shardings.
  boxed = jax.eval_shape(module.init, jax.random.PRNGKey(0), A.example_input(config))
  leaves = jax.tree.leaves(boxed["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(l, nn.Partitioned) and len(l.names) == l.value.ndim for l in leaves)
  from shared.mesh import LOGICAL_RULES
  mesh = jax.make_mesh((1, 1, 1, 1), ("data", "fsdp", "tensor", "sequence"), devices=jax.devices()[:1])
  nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed["params"]), mesh, LOGICAL_RULES)


def _rewrite(src, dst, edit):
  """Copies a diffusers directory with its safetensors state dict passed through `edit`."""
  dst.mkdir()
  (dst / "config.json").write_text((src / "config.json").read_text())
  sd = load_file(str(src / "diffusion_pytorch_model.safetensors"))
  save_file(edit(sd), str(dst / "diffusion_pytorch_model.safetensors"))


def test_bad_checkpoints_name_the_key(tmp_path):
  case = _case("sd")
  src = tmp_path / "good"
  case.torch_model.save_pretrained(str(src))
  key = "decoder.conv_out.weight"
  _rewrite(src, tmp_path / "missing", lambda sd: {k: v for k, v in sd.items() if k != key})
  with pytest.raises(CheckpointError, match=r"missing keys \['decoder.conv_out.weight'\]"):
    shared.weights.load_pretrained(str(tmp_path / "missing"))
  q = "encoder.mid_block.attentions.0.to_q.weight"
  _rewrite(src, tmp_path / "shape", lambda sd: {**sd, q: sd[q][:, :4].contiguous()})
  with pytest.raises(CheckpointError, match="shape mismatches.*encoder.mid_block.attentions.0.to_q.weight"):
    shared.weights.load_pretrained(str(tmp_path / "shape"))
  with pytest.raises(CheckpointError, match="unexpected keys.*extra.weight"):
    F.import_autoencoder_kl({**case.torch_model.state_dict(), "extra.weight": torch.zeros(1)}, case.config)


def test_old_attention_names(tmp_path):
  """query/key/value/proj_attn (diffusers < 0.14): our own importers accept them, the registry's does not."""
  case = _case("sd")
  old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  def rename(sd):
    out = {}
    for k, v in sd.items():
      for new, was in old.items():
        k = k.replace(f".attentions.0.{new}.", f".attentions.0.{was}.")
      out[k] = v
    return out
  sd_old = rename(dict(case.torch_model.state_dict()))
  assert "decoder.mid_block.attentions.0.proj_attn.bias" in sd_old
  want = F.import_autoencoder_kl(case.torch_model.state_dict(), case.config)
  jax.tree.map(np.testing.assert_array_equal, F.import_autoencoder_kl(sd_old, case.config), want)
  case.torch_model.save_pretrained(str(tmp_path / "good"))
  _rewrite(tmp_path / "good", tmp_path / "old", rename)
  _, params = F.load_autoencoder_kl(str(tmp_path / "old"))
  jax.tree.map(np.testing.assert_array_equal, params, want)
  theirs = TorchAE.from_pretrained(str(tmp_path / "old"))   # diffusers itself renames them too
  np.testing.assert_array_equal(theirs.state_dict()["encoder.mid_block.attentions.0.to_q.weight"].numpy(),
                                np.asarray(want["encoder"]["mid_block"]["attentions_0"]["to_q"]["kernel"]).T)
  with pytest.raises(CheckpointError, match="unexpected keys.*attentions.0.query.weight"):
    shared.weights.load_pretrained(str(tmp_path / "old"))


def test_call_sampling_latents_and_dtypes():
  case = _case("flux")
  params = F.import_autoencoder_kl(case.torch_model.state_dict(), case.config)
  model, x, rng = case.model, _tl(case.x), jax.random.PRNGKey(7)
  bf16 = A.AutoencoderKL(case.config.replace(dtype="bfloat16"))
  # one compile: __call__ with a posterior draw, and a bfloat16-compute encode
  sampled, (m16, _) = _jit(lambda p, x, rng: (
      model.apply({"params": p}, x, sample_posterior=True, rng=rng),
      bf16.apply({"params": p}, x, method=A.AutoencoderKL.encode)))(params, x, rng)
  # __call__ decodes mean + exp(logvar / 2) * eps drawn with the given key (or the mean itself by default:
  # diffusers' forward; that path runs in every init, it is left out here to save a compile)
  (mean, logvar), _ = case.run(params, x, _tl(case.mean))
  _, direct = case.run(params, x, A.sample(rng, mean, logvar))
  np.testing.assert_allclose(sampled, direct, rtol=1e-5, atol=1e-6)
  assert jax.eval_shape(lambda p: model.apply({"params": p}, x), params).shape == x.shape
  # precision policy: params stay float32, bfloat16 compute stays close, moments come back float32;
  # fp16 with force_upcast computes in float32 (what diffusers' pipelines do), bfloat16 is kept
  assert m16.dtype == jnp.float32 and _rel(_cl(m16), case.mean) < 5e-2
  assert case.config.replace(dtype="float16", force_upcast=True).compute_dtype == jnp.float32
  assert case.config.replace(dtype="bfloat16", force_upcast=True).compute_dtype == jnp.bfloat16
  # latents the diffusion model sees: (z - shift) * scaling, and back
  z = jnp.asarray(case.mean.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(A.to_latent(z, case.config), (z - 0.1159) * 0.3611, rtol=1e-6)
  np.testing.assert_allclose(A.from_latent(A.to_latent(z, case.config), case.config), z, rtol=1e-5, atol=1e-6)
  stats = case.config.replace(latents_mean=(0.1, 0.2, 0.3, 0.4), latents_std=(2.0, 1.0, 0.5, 1.0))
  np.testing.assert_allclose(A.to_latent(z, stats), (z - jnp.asarray(stats.latents_mean)) * 0.3611
                             / jnp.asarray(stats.latents_std), rtol=1e-6)
  # errors at trace time that say what was expected
  with pytest.raises(ConfigError, match="needs rng"):
    jax.eval_shape(lambda p: model.apply({"params": p}, x, sample_posterior=True), params)
  with pytest.raises(ConfigError, match=r"expected \[B, H, W, 3\]"):
    jax.eval_shape(lambda p: model.apply({"params": p}, jnp.asarray(case.x.numpy()), method=A.AutoencoderKL.encode),
                   params)
  with pytest.raises(ConfigError, match="multiples of 2"):
    jax.eval_shape(lambda p: model.apply({"params": p}, x[:, :15], method=A.AutoencoderKL.encode), params)


def test_unsupported_config_values():
  base = _public(CONFIGS["sd"][0])
  for key, value in (("down_block_types", ["AttnDownEncoderBlock2D"] * 3), ("up_block_types", ["UpBlock2D"] * 3),
                     ("act_fn", "tanh"), ("norm_num_groups", 3), ("down_block_types", _ENC * 2)):
    with pytest.raises(ConfigError, match=key):
      F.config_from_diffusers({**base, key: value})
  with pytest.raises(ConfigError, match="_class_name"):
    F.config_from_diffusers({**base, "_class_name": "AutoencoderKLWan"})
