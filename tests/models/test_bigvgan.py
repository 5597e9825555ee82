"""BigVGAN: name table vs a faithful PyTorch definition of NVIDIA's architecture, forward parity.

No PyPI package ships BigVGAN, so the reference below is written here from the public repository's
structure (NVIDIA/BigVGAN bigvgan.py, activations.py, alias_free_activation/torch/*): weight-normed convs,
AMPBlock1/2, Snake/SnakeBeta behind 2x anti-aliased resampling with Kaiser-sinc filters (as torch buffers).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tnn = torch.nn
F = torch.nn.functional

from shared.errors import CheckpointError  # noqa: E402
from shared.models import bigvgan as bv  # noqa: E402
from shared.weights import bigvgan_family as fam  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*:FutureWarning")


# ----------------------------------------------------------------------------- PyTorch reference
def _torch_kaiser_sinc(cutoff, half_width, size):
  half = size // 2
  a = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
  beta = 0.1102 * (a - 8.7) if a > 50 else (0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21) if a >= 21 else 0.0)
  win = torch.kaiser_window(size, beta=beta, periodic=False)
  t = torch.arange(-half, half) + 0.5 if size % 2 == 0 else torch.arange(size) - half
  f = 2 * cutoff * win * torch.sinc(2 * cutoff * t)
  return (f / f.sum()).view(1, 1, size)


class TUp(tnn.Module):
  def __init__(self, k=12):
    super().__init__()
    self.k, self.pad = k, k // 2 - 1
    self.pl, self.pr = self.pad * 2 + (k - 2) // 2, self.pad * 2 + (k - 1) // 2
    self.register_buffer("filter", _torch_kaiser_sinc(0.25, 0.3, k))

  def forward(self, x):
    c = x.shape[1]
    x = F.pad(x, (self.pad, self.pad), mode="replicate")
    x = 2 * F.conv_transpose1d(x, self.filter.expand(c, -1, -1), stride=2, groups=c)
    return x[..., self.pl:-self.pr]


class TLowPass(tnn.Module):
  def __init__(self, k=12):
    super().__init__()
    self.pl, self.pr = k // 2 - 1, k // 2
    self.register_buffer("filter", _torch_kaiser_sinc(0.25, 0.3, k))

  def forward(self, x):
    c = x.shape[1]
    return F.conv1d(F.pad(x, (self.pl, self.pr), mode="replicate"), self.filter.expand(c, -1, -1),
                    stride=2, groups=c)


class TDown(tnn.Module):
  def __init__(self):
    super().__init__()
    self.lowpass = TLowPass()

  def forward(self, x):
    return self.lowpass(x)


class TSnake(tnn.Module):
  def __init__(self, c, beta, logscale):
    super().__init__()
    self.logscale, self.has_beta = logscale, beta
    self.alpha = tnn.Parameter(torch.zeros(c) if logscale else torch.ones(c))
    if beta:
      self.beta = tnn.Parameter(torch.zeros(c) if logscale else torch.ones(c))

  def forward(self, x):
    a = self.alpha[None, :, None]
    b = self.beta[None, :, None] if self.has_beta else a
    if self.logscale:
      a, b = a.exp(), b.exp()
    return x + (1.0 / (b + 1e-9)) * torch.sin(x * a) ** 2


class TAct(tnn.Module):
  def __init__(self, c, h):
    super().__init__()
    self.act = TSnake(c, h["activation"] == "snakebeta", h["snake_logscale"])
    self.upsample, self.downsample = TUp(), TDown()

  def forward(self, x):
    return self.downsample(self.act(self.upsample(x)))


def _wn(m, style):
  if style == "parametrizations":
    return tnn.utils.parametrizations.weight_norm(m)
  return tnn.utils.weight_norm(m)


class TAMP(tnn.Module):
  def __init__(self, h, c, k, dil, style):
    super().__init__()
    self.kind = h["resblock"]
    pad = lambda d: (k * d - d) // 2  # noqa: E731
    if self.kind == "1":
      self.convs1 = tnn.ModuleList([_wn(tnn.Conv1d(c, c, k, 1, dilation=d, padding=pad(d)), style) for d in dil])
      self.convs2 = tnn.ModuleList([_wn(tnn.Conv1d(c, c, k, 1, dilation=1, padding=pad(1)), style) for _ in dil])
      n = 2 * len(dil)
    else:
      self.convs = tnn.ModuleList([_wn(tnn.Conv1d(c, c, k, 1, dilation=d, padding=pad(d)), style) for d in dil])
      n = len(dil)
    self.activations = tnn.ModuleList([TAct(c, h) for _ in range(n)])

  def forward(self, x):
    if self.kind == "1":
      for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations[::2], self.activations[1::2]):
        x = x + c2(a2(c1(a1(x))))
    else:
      for c, a in zip(self.convs, self.activations):
        x = x + c(a(x))
    return x


class TBigVGAN(tnn.Module):
  def __init__(self, h, style="weight_g"):
    super().__init__()
    self.h = h
    c0 = h["upsample_initial_channel"]
    self.conv_pre = _wn(tnn.Conv1d(h["num_mels"], c0, 7, 1, padding=3), style)
    self.ups = tnn.ModuleList([
        tnn.ModuleList([_wn(tnn.ConvTranspose1d(c0 // 2 ** i, c0 // 2 ** (i + 1), k, u, padding=(k - u) // 2), style)])
        for i, (u, k) in enumerate(zip(h["upsample_rates"], h["upsample_kernel_sizes"]))])
    self.resblocks = tnn.ModuleList()
    for i in range(len(self.ups)):
      ch = c0 // 2 ** (i + 1)
      for k, d in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"]):
        self.resblocks.append(TAMP(h, ch, k, d, style))
    self.activation_post = TAct(ch, h)
    self.conv_post = _wn(tnn.Conv1d(ch, 1, 7, 1, padding=3, bias=h["use_bias_at_final"]), style)

  def forward(self, x):
    n = len(self.h["resblock_kernel_sizes"])
    x = self.conv_pre(x)
    for i, up in enumerate(self.ups):
      x = up[0](x)
      x = sum(self.resblocks[i * n + j](x) for j in range(n)) / n
    x = self.conv_post(self.activation_post(x))
    return torch.tanh(x) if self.h["use_tanh_at_final"] else torch.clamp(x, -1.0, 1.0)


# ----------------------------------------------------------------------------- tests
H1 = dict(num_mels=8, upsample_rates=[4, 2], upsample_kernel_sizes=[8, 4], upsample_initial_channel=16,
          resblock="1", resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
          activation="snakebeta", snake_logscale=True, use_tanh_at_final=False, use_bias_at_final=False,
          sampling_rate=16000, hop_size=8, segment_size=256, lambda_melloss=15)   # + ignored training keys
H2 = dict(H1, resblock="2", resblock_dilation_sizes=[[1, 3], [2, 1]], activation="snake", snake_logscale=False,
          use_tanh_at_final=True, use_bias_at_final=True, upsample_rates=[2, 3], upsample_kernel_sizes=[4, 7])


def _randomise(model, seed):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith(("alpha", "beta")):
        p.copy_(0.3 * torch.randn(p.shape, generator=g))
      elif "original0" in name or name.endswith("weight_g"):  # conv_post small: keep clear of the clamp
        p.copy_((0.5 + torch.rand(p.shape, generator=g)) * (0.05 if name.startswith("conv_post") else 1.0))
      else:
        p.copy_(0.2 * torch.randn(p.shape, generator=g))
  return model


def _build(h, style, seed):
  model = _randomise(TBigVGAN(h, style), seed).eval()
  if not h["snake_logscale"]:  # linear-scale alpha/beta must stay away from 0
    with torch.no_grad():
      for name, p in model.named_parameters():
        if name.endswith(("alpha", "beta")):
          p.abs_().add_(0.5)
  return model


_FORWARD = {}


def _forward(cfg):
  if cfg not in _FORWARD:
    _FORWARD[cfg] = jax.jit(lambda p, x: bv.BigVGAN(cfg).apply({"params": p}, x))
  return _FORWARD[cfg]


@pytest.mark.parametrize("h,style", [(H1, "weight_g"), (H2, "parametrizations")])
def test_table_strict_and_forward_parity(h, style):
  cfg = fam.config_from_dict(h)
  tm = _build(h, style, seed=0)
  sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
  # (a) import is strict and export gives back exactly the PyTorch keys (buffers included) and values
  params = fam.import_bigvgan(sd, cfg)
  ours = fam.export_bigvgan(params, cfg, style=style)
  assert set(ours) == set(sd)
  for k in sd:
    np.testing.assert_allclose(ours[k], sd[k], rtol=0, atol=1e-7, err_msg=k)
  info = tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.items()}, strict=True)
  assert not info.missing_keys and not info.unexpected_keys
  # (b) forward parity, fp32, odd length
  mel = np.random.default_rng(1).standard_normal((2, 11, h["num_mels"])).astype(np.float32)
  with torch.no_grad():
    ref = tm(torch.from_numpy(mel).transpose(1, 2))[:, 0].numpy()
  got = np.asarray(_forward(cfg)(params, jnp.asarray(mel)))
  assert got.shape == (2, 11 * int(np.prod(h["upsample_rates"])))
  assert 0.01 < np.abs(ref).max() < 0.99, np.abs(ref).max()
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_other_spelling_and_removed_weight_norm_import():
  cfg = fam.config_from_dict(H1)
  tm = _build(H1, "parametrizations", seed=3)
  sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
  params = fam.import_bigvgan(sd, cfg)
  # exported with the legacy spelling, loads into a torch.nn.utils.weight_norm model
  legacy = TBigVGAN(H1, "weight_g")
  exported = fam.export_bigvgan(params, cfg)
  legacy.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in exported.items()}, strict=True)
  # weight norm removed (plain .weight) imports to the same effective weights
  for m in tm.modules():
    if hasattr(m, "parametrizations"):
      torch.nn.utils.parametrize.remove_parametrizations(m, "weight")
  plain = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
  assert "conv_pre.weight" in plain
  params2 = fam.import_bigvgan(plain, cfg)
  mel = jnp.asarray(np.random.default_rng(2).standard_normal((1, 7, 8)).astype(np.float32))
  f = _forward(cfg)
  np.testing.assert_allclose(np.asarray(f(params2, mel)), np.asarray(f(params, mel)), rtol=1e-5, atol=1e-6)
  with torch.no_grad():
    ref = legacy(torch.from_numpy(np.array(mel)).transpose(1, 2))[:, 0].numpy()
  np.testing.assert_allclose(np.asarray(f(params, mel)), ref, rtol=1e-5, atol=1e-5)


def test_errors_and_file_loading(tmp_path):
  cfg = fam.config_from_dict(H1)
  tm = _build(H1, "weight_g", seed=4)
  sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
  bad = dict(sd)
  del bad["resblocks.1.convs2.0.weight_v"]
  bad["extra.weight_q"] = np.zeros(3, np.float32)
  with pytest.raises(CheckpointError, match="missing keys.*resblocks.1.convs2.0.weight_v"):
    fam.import_bigvgan(bad, cfg)
  bad = dict(sd, **{"activation_post.upsample.filter": np.ones((1, 1, 12), np.float32)})
  with pytest.raises(CheckpointError, match="activation_post.upsample.filter"):
    fam.import_bigvgan(bad, cfg)
  # NVIDIA's layout: {"generator": state_dict} in bigvgan_generator.pt next to config.json
  import json
  torch.save({"generator": tm.state_dict()}, tmp_path / "bigvgan_generator.pt")
  (tmp_path / "config.json").write_text(json.dumps(H1))
  model, params = fam.load_bigvgan(str(tmp_path))
  assert model.config == cfg
  ref = fam.import_bigvgan(sd, cfg)
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_paper_config_shapes_and_filter():
  cfg = bv.BIGVGAN_V2_44K_128BAND_512X
  assert cfg.upsample_factor == 512 and bv.BIGVGAN_16K_80BAND_256X.upsample_factor == 256
  assert fam.config_from_dict(fam.config_to_dict(cfg)) == cfg
  shapes = fam.param_shapes(cfg)
  assert shapes[("conv_pre", "weight_v")] == (7, 128, 1536)
  assert shapes[("ups_0", "weight_v")] == (16, 1536, 768) and shapes[("ups_0", "weight_g")] == (1536,)
  assert shapes[("resblocks_17", "convs1_2", "weight_v")] == (11, 24, 24)
  assert ("conv_post", "bias") not in shapes
  assert ("conv_post", "bias") in fam.param_shapes(bv.BIGVGAN_16K_80BAND_256X)
  n = sum(int(np.prod(s)) for s in shapes.values())
  assert 120e6 < n < 125e6, n   # NVIDIA reports 122M parameters for this model
  np.testing.assert_allclose(bv.kaiser_sinc_filter(0.25, 0.3, 12),
                             _torch_kaiser_sinc(0.25, 0.3, 12).numpy().ravel(), rtol=0, atol=1e-7)
