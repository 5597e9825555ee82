"""Wan video VAE vs diffusers' AutoencoderKLWan (small random configs), both directions.

Two configs: Wan2.1-style (plain down/up paths, 3 input channels, z 4, 2 resnets per stage) and
Wan2.2-style (residual AvgDown3D/DupUp3D paths, 2x2 patchify -> 12 channels, z 6, decoder base dim
different from the encoder's). 9 frames -> 3 latent frames; fp32 tolerance ~1e-5 relative.
Full-size Wan2.1 / Wan2.2 name tables are checked against diffusers models built on the meta device.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import shared.weights
import shared.weights.table
import torch
from diffusers import AutoencoderKLWan as TorchWan
from flax import traverse_util

from shared.errors import CheckpointError, ConfigError
from shared.models import wan_vae as W
from shared.weights import wan_vae_family as F

CONFIGS = {
    "wan21": (dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                   latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.5, 2.0, 1.0]), 16),
    "wan22": (dict(base_dim=8, decoder_base_dim=12, z_dim=6, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                   is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                   latents_mean=[0.0] * 6, latents_std=[1.0] * 6), 32),
}
FRAMES = 9


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _cl(x):  # ours [B,T,H,W,C] -> torch layout [B,C,T,H,W]
  return np.asarray(x).transpose(0, 4, 1, 2, 3)


def _tl(x):  # torch layout -> ours
  return jnp.asarray(np.asarray(x).transpose(0, 2, 3, 4, 1))


class Case:
  def __init__(self, name):
    kwargs, size = CONFIGS[name]
    torch.manual_seed(0)
    self.torch_model = TorchWan(**kwargs).eval()
    self.config = F.config_from_diffusers(dict(self.torch_model.config))
    self.model = W.AutoencoderKLWan(self.config)
    self.params = F.import_wan_vae(self.torch_model.state_dict(), self.config)
    self.x = torch.rand(2, 3, FRAMES, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
      post = self.torch_model.encode(self.x).latent_dist
      self.mean, self.logvar = post.mean.numpy(), post.logvar.numpy()
      self.video = self.torch_model.decode(post.mean).sample.numpy()
    self._fns = {}

  def encode(self, chunk):
    """Jitted encode (compiled once per chunking, shared by the tests)."""
    if ("enc", chunk) not in self._fns:
      self._fns["enc", chunk] = jax.jit(functools.partial(W.encode, self.model, chunk=chunk))
    return self._fns["enc", chunk]

  def decode(self, chunk):
    if ("dec", chunk) not in self._fns:
      self._fns["dec", chunk] = jax.jit(functools.partial(W.decode, self.model, chunk=chunk))
    return self._fns["dec", chunk]


@functools.lru_cache(maxsize=None)
def _case(name):
  return Case(name)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request):
  return _case(request.param)


def test_import_encode_matches_diffusers(case):
  mean, logvar = case.encode(4)(case.params, _tl(case.x))
  assert mean.shape == (2, 3) + case.mean.shape[3:] + (case.config.z_dim,)
  assert _rel(_cl(mean), case.mean) < 1e-5
  assert _rel(_cl(logvar), case.logvar) < 1e-5


def test_import_decode_matches_diffusers(case):
  video = case.decode(1)(case.params, _tl(case.mean))
  assert video.shape == (2, FRAMES) + case.video.shape[3:] + (3,)
  assert np.mean(np.abs(case.video) < 1.0) > 0.5  # not all clamped: the comparison means something
  assert _rel(_cl(video), case.video) < 1e-5


def test_whole_equals_chunked():
  # Wan2.2-style only (its time paths are a superset of Wan2.1's: + AvgDown3D/DupUp3D), to save compiles.
  case = _case("wan22")
  x = _tl(case.x)
  for a, b in zip(case.encode(None)(case.params, x), case.encode(4)(case.params, x)):
    assert _rel(a, b) < 1e-5
  z = _tl(case.mean)
  assert _rel(case.decode(None)(case.params, z), case.decode(1)(case.params, z)) < 1e-5


def _random_params(config, seed=3):
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape in F.param_shapes(config).items():
    if path[-1] == "kernel":
      v = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
    elif path[-1] == "gamma":
      v = 1.0 + 0.2 * rng.normal(size=shape)
    else:
      v = 0.1 * rng.normal(size=shape)
    flat[path] = jnp.asarray(v, jnp.float32)
  return traverse_util.unflatten_dict(flat)


def test_export_loads_in_diffusers(case, tmp_path):
  params = _random_params(case.config)
  state_dict = {k: torch.from_numpy(v.copy()) for k, v in F.export_wan_vae(params, case.config).items()}
  theirs = TorchWan(**{k: v for k, v in F.config_to_diffusers(case.config).items() if k[0] != "_"}).eval()
  theirs.load_state_dict(state_dict, strict=True)
  # The directory form (config.json + safetensors that diffusers' from_pretrained reads), written
  # by our own writer and by the shared.weights registry.
  public = lambda c: {k: v for k, v in c.items() if k[0] != "_"}
  for name, save in (("own", F.save_wan_vae), ("registry", shared.weights.save_pretrained)):
    save(case.model, params, str(tmp_path / name))
    loaded = TorchWan.from_pretrained(str(tmp_path / name)).eval()
    assert public(loaded.config) == public(theirs.config)
    for k, v in loaded.state_dict().items():
      assert torch.equal(v, state_dict[k]), k
  with torch.no_grad():
    post = theirs.encode(case.x).latent_dist
    video = theirs.decode(post.mean).sample.numpy()
  mean, _ = case.encode(4)(params, _tl(case.x))
  assert _rel(_cl(mean), post.mean.numpy()) < 1e-5
  ours = case.decode(1)(params, _tl(post.mean.numpy()))
  assert np.mean(np.abs(video) < 1.0) > 0.3
  assert _rel(_cl(ours), video) < 1e-5


def test_load_diffusers_directory(case, tmp_path):
  case.torch_model.save_pretrained(str(tmp_path))
  for load in (F.load_wan_vae, shared.weights.load_pretrained):  # our reader and the registry's
    model, params = load(str(tmp_path))
    assert isinstance(model, W.AutoencoderKLWan) and model.config == case.config
    jax.tree.map(np.testing.assert_array_equal, params, case.params)


def test_import_errors_name_the_key(case):
  sd = dict(case.torch_model.state_dict())
  key = "decoder.conv_out.weight"
  bad = dict(sd, **{key: sd[key][:, :1]})
  with pytest.raises(CheckpointError, match="decoder.conv_out.weight"):
    F.import_wan_vae(bad, case.config)
  missing = {k: v for k, v in sd.items() if k != key}
  with pytest.raises(CheckpointError, match="missing keys.*decoder.conv_out.weight"):
    F.import_wan_vae(missing, case.config)
  with pytest.raises(CheckpointError, match="unexpected keys.*extra.weight"):
    F.import_wan_vae(dict(sd, **{"extra.weight": sd[key]}), case.config)
  with pytest.raises(ConfigError, match="multiple of the temporal stride"):
    W.encode(case.model, case.params, _tl(case.x), chunk=3)


@pytest.mark.parametrize("preset", ["wan21", "wan22"])
def test_full_size_tables_match_diffusers(preset):
  config = W.wan21_config() if preset == "wan21" else W.wan22_config()
  kwargs = {k: v for k, v in F.config_to_diffusers(config).items() if k[0] != "_"}
  with torch.device("meta"):
    theirs = TorchWan(**kwargs)
  assert F.config_from_diffusers(dict(theirs.config)) == config
  expected = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
  shapes = {k: jax.ShapeDtypeStruct(v, jnp.float32) for k, v in F.param_shapes(config).items()}
  specs = shared.weights.table.export_specs(F.name_table(config), shapes)
  assert {key: tuple(shape) for key, shape, _, _ in specs} == expected
  if preset == "wan22":
    assert config.z_dim == 48 and config.spatial_stride == 16 and config.temporal_stride == 4
    assert len(config.latents_mean) == len(config.latents_std) == 48
  # Every parameter carries one logical axis name per dimension.
  model = W.AutoencoderKLWan(config)
  s = 2 ** (len(config.dim_mult) - 1)
  boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 5, s, s, config.in_channels)))
  leaves = jax.tree.leaves(boxed["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(l, nn.Partitioned) and len(l.names) == l.value.ndim for l in leaves)
  # ... and the names map to mesh shardings (a logical name may appear once per array)
  from shared.mesh import LOGICAL_RULES
  mesh = jax.make_mesh((1, 1, 1, 1), ("data", "fsdp", "tensor", "sequence"), devices=jax.devices()[:1])
  nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed["params"]), mesh, LOGICAL_RULES)


def test_patchify_roundtrip_and_latent_normalisation():
  x = jnp.arange(2 * 3 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 3, 4, 6, 3)
  p = W.patchify(x, 2)
  assert p.shape == (2, 3, 2, 3, 12)
  np.testing.assert_array_equal(W.unpatchify(p, 2), x)
  from diffusers.models.autoencoders.autoencoder_kl_wan import patchify as their_patchify
  np.testing.assert_array_equal(_cl(p), their_patchify(torch.from_numpy(_cl(x).copy()), 2).numpy())
  config = W.wan22_config()
  z = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 2, 2, 48))
  np.testing.assert_allclose(W.denormalize_latents(W.normalize_latents(z, config), config), z, atol=1e-5)
