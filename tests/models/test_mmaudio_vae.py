"""MMAudio 1-D mel VAE: name table vs a faithful PyTorch definition, forward parity.

MMAudio is not on PyPI, so the reference is written here from the public repository's structure
(hkchengrex/MMAudio mmaudio/ext/autoencoder/{vae,vae_modules,edm2_utils}.py): bias-free MPConv1D whose raw
checkpoint weights are normalised by remove_weight_norm() before inference, pixel norm, mp_silu, mp_sum,
interleaved qkv attention, avg-pool downsampling, nearest upsampling, clamped activations, learnable gain.
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
from shared.models import mmaudio_vae as mv  # noqa: E402
from shared.weights import mmaudio_vae_family as fam  # noqa: E402


# ----------------------------------------------------------------------------- PyTorch reference
def t_normalize(x, dim=None, eps=1e-4):
  dim = list(range(1, x.ndim)) if dim is None else dim
  n = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
  n = eps + n * math.sqrt(n.numel() / x.numel())
  return x / n.to(x.dtype)


def t_silu(x):
  return F.silu(x) / 0.596


def t_sum(a, b, t):
  return torch.lerp(a, b, t) / math.sqrt((1 - t) ** 2 + t ** 2)


class TMPConv(tnn.Module):
  def __init__(self, cin, cout, k):
    super().__init__()
    self.weight = tnn.Parameter(torch.randn(cout, cin, k))
    self.removed = False

  def forward(self, x, gain=1):
    assert self.removed
    w = self.weight * gain
    return F.conv1d(x, w, padding=w.shape[-1] // 2)

  def remove_weight_norm(self):
    w = t_normalize(self.weight.float())
    self.weight.data.copy_(w / math.sqrt(w[0].numel()))
    self.removed = True


class TRes(tnn.Module):
  def __init__(self, cin, cout, k=3):
    super().__init__()
    self.cin, self.cout = cin, cout
    self.conv1, self.conv2 = TMPConv(cin, cout, k), TMPConv(cout, cout, k)
    if cin != cout:
      self.nin_shortcut = TMPConv(cin, cout, 1)

  def forward(self, x):
    x = t_normalize(x, dim=1)
    h = self.conv2(t_silu(self.conv1(t_silu(x))))
    if self.cin != self.cout:
      x = self.nin_shortcut(x)
    return t_sum(x, h, 0.3)


class TAttn(tnn.Module):
  def __init__(self, c, heads=1):
    super().__init__()
    self.heads = heads
    self.qkv, self.proj_out = TMPConv(c, 3 * c, 1), TMPConv(c, c, 1)

  def forward(self, x):
    y = self.qkv(x)
    y = y.reshape(y.shape[0], self.heads, -1, 3, y.shape[-1])
    q, k, v = t_normalize(y, dim=2).unbind(3)          # [b, h, c, l]
    h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
    h = h.transpose(-1, -2).reshape(x.shape)            # b h l c -> b (h c) l
    return t_sum(x, self.proj_out(h), 0.3)


class TDown(tnn.Module):
  def __init__(self, c):
    super().__init__()
    self.conv1, self.conv2 = TMPConv(c, c, 1), TMPConv(c, c, 1)

  def forward(self, x):
    return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=2, stride=2))


class TUp(tnn.Module):
  def __init__(self, c):
    super().__init__()
    self.conv = TMPConv(c, c, 3)

  def forward(self, x):
    return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest-exact"))


class TMid(tnn.Module):
  def __init__(self, c, k, heads):
    super().__init__()
    self.block_1, self.attn_1, self.block_2 = TRes(c, c, k), TAttn(c, heads), TRes(c, c, k)

  def forward(self, h):
    return self.block_2(self.attn_1(self.block_1(h)))


class TEncoder(tnn.Module):
  def __init__(self, c):
    super().__init__()
    self.c, d, k = c, c["hidden_dim"], c["kernel_size"]
    self.conv_in = TMPConv(c["data_dim"], d, k)
    self.down = tnn.ModuleList()
    cin = d
    for i, m in enumerate(c["ch_mult"]):
      lvl = tnn.Module()
      lvl.block, lvl.attn = tnn.ModuleList(), tnn.ModuleList()
      for _ in range(c["num_res_blocks"]):
        lvl.block.append(TRes(cin, d * m, k))
        cin = d * m
        if i in c["attn_layers"]:
          lvl.attn.append(TAttn(cin, c["num_heads"]))
      if i in c["down_layers"]:
        lvl.downsample = TDown(cin)
      self.down.append(lvl)
    self.mid = TMid(cin, k, c["num_heads"])
    self.conv_out = TMPConv(cin, 2 * c["embed_dim"], k)
    self.learnable_gain = tnn.Parameter(torch.zeros([]))

  def forward(self, x):
    c, clip = self.c, self.c["clip_act"]
    h = self.conv_in(x)
    for i, lvl in enumerate(self.down):
      for j, blk in enumerate(lvl.block):
        h = blk(h)
        if len(lvl.attn):
          h = lvl.attn[j](h)
        h = h.clamp(-clip, clip)
      if i in c["down_layers"]:
        h = lvl.downsample(h)
    h = self.mid(h).clamp(-clip, clip)
    return self.conv_out(t_silu(h), gain=self.learnable_gain + 1)


class TDecoder(tnn.Module):
  def __init__(self, c):
    super().__init__()
    self.c, d, k = c, c["hidden_dim"], c["kernel_size"]
    self.up_layers = [i + 1 for i in c["down_layers"]]
    cin = d * c["ch_mult"][-1]
    self.conv_in = TMPConv(c["embed_dim"], cin, k)
    self.mid = TMid(cin, 3, c["num_heads"])
    levels = {}
    for i in reversed(range(len(c["ch_mult"]))):
      lvl = tnn.Module()
      lvl.block, lvl.attn = tnn.ModuleList(), tnn.ModuleList()
      for _ in range(c["num_res_blocks"] + 1):
        lvl.block.append(TRes(cin, d * c["ch_mult"][i]))
        cin = d * c["ch_mult"][i]
        if i in c["attn_layers"]:
          lvl.attn.append(TAttn(cin, c["num_heads"]))
      if i in self.up_layers:
        lvl.upsample = TUp(cin)
      levels[i] = lvl
    self.up = tnn.ModuleList([levels[i] for i in range(len(c["ch_mult"]))])
    self.conv_out = TMPConv(cin, c["data_dim"], k)
    self.learnable_gain = tnn.Parameter(torch.zeros([]))

  def forward(self, z):
    clip = self.c["clip_act"]
    h = self.mid(self.conv_in(z)).clamp(-clip, clip)
    for i in reversed(range(len(self.up))):
      lvl = self.up[i]
      for j, blk in enumerate(lvl.block):
        h = blk(h)
        if len(lvl.attn):
          h = lvl.attn[j](h)
        h = h.clamp(-clip, clip)
      if i in self.up_layers:
        h = lvl.upsample(h)
    return self.conv_out(t_silu(h), gain=self.learnable_gain + 1)


class TVAE(tnn.Module):
  def __init__(self, c):
    super().__init__()
    if c["data_dim"] in (80, 128):
      tab = {80: (mv.DATA_MEAN_80D, mv.DATA_STD_80D), 128: (mv.DATA_MEAN_128D, mv.DATA_STD_128D)}[c["data_dim"]]
      self.register_buffer("data_mean", torch.tensor(tab[0], dtype=torch.float32))
      self.register_buffer("data_std", torch.tensor(tab[1], dtype=torch.float32))
      self.data_mean = self.data_mean.view(1, -1, 1)   # re-registers the buffer with shape [1, D, 1]
      self.data_std = self.data_std.view(1, -1, 1)
    self.encoder, self.decoder = TEncoder(c), TDecoder(c)

  def remove_weight_norm(self):
    for m in self.modules():
      if isinstance(m, TMPConv):
        m.remove_weight_norm()
    return self

  def encode(self, x):
    if hasattr(self, "data_mean"):
      x = (x - self.data_mean) / self.data_std
    mean, logvar = torch.chunk(self.encoder(x), 2, dim=1)
    return mean, logvar.clamp(-30.0, 20.0)

  def decode(self, z):
    out = self.decoder(z)
    return out * self.data_std + self.data_mean if hasattr(self, "data_mean") else out


# ----------------------------------------------------------------------------- tests
C16 = dict(data_dim=80, embed_dim=4, hidden_dim=8, ch_mult=(1, 2, 4), num_res_blocks=2, attn_layers=(3,),
           down_layers=(0,), kernel_size=3, clip_act=256.0, num_heads=1)          # MMAudio's layout, tiny width
CVAR = dict(data_dim=12, embed_dim=3, hidden_dim=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_layers=(1,),
            down_layers=(0, 1), kernel_size=5, clip_act=3.0, num_heads=2)   # attention in levels, 2 heads, clamps


def _torch_vae(c, seed):
  torch.manual_seed(seed)
  m = TVAE(c)
  with torch.no_grad():
    m.encoder.learnable_gain.fill_(0.3)
    m.decoder.learnable_gain.fill_(-0.2)
  return m.eval()


_FNS = {}


def _fns(cfg):
  if cfg not in _FNS:
    model = mv.MMAudioVAE(cfg)
    _FNS[cfg] = (jax.jit(lambda p, x: model.apply({"params": p}, x, method=mv.MMAudioVAE.encode)),
                 jax.jit(lambda p, z: model.apply({"params": p}, z, method=mv.MMAudioVAE.decode)))
  return _FNS[cfg]


@pytest.mark.parametrize("c", [C16, CVAR], ids=["mmaudio16k_tiny", "variant"])
def test_table_strict_and_forward_parity(c):
  cfg = mv.MMAudioVAEConfig(**c)
  tm = _torch_vae(c, seed=0)
  sd = {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}   # checkpoint form: raw weights
  assert ("data_mean" in sd) == (c["data_dim"] == 80)
  # (a) strict import; export gives exactly the PyTorch keys and values
  params = fam.import_mmaudio_vae(sd, cfg)
  ours = fam.export_mmaudio_vae(params, cfg)
  assert set(ours) == set(sd)
  for k in sd:
    assert ours[k].shape == sd[k].shape, k
    np.testing.assert_array_equal(ours[k], sd[k], err_msg=k)
  info = tm.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.items()}, strict=True)
  assert not info.missing_keys and not info.unexpected_keys
  # (b) forward parity after MMAudio's remove_weight_norm(): encode and decode, fp32
  tm.remove_weight_norm()
  mean, std = cfg.stats()
  t = 16
  mel = (np.random.default_rng(1).standard_normal((2, t, c["data_dim"])) * std + mean).astype(np.float32)
  with torch.no_grad():
    r_mean, r_logvar = tm.encode(torch.from_numpy(mel).transpose(1, 2))
    r_dec = tm.decode(r_mean)
  enc, dec = _fns(cfg)
  g_mean, g_logvar = enc(params, jnp.asarray(mel))
  g_dec = dec(params, g_mean)
  down = 2 ** len(c["down_layers"])
  assert g_mean.shape == (2, t // down, c["embed_dim"]) and g_dec.shape == mel.shape
  for got, ref in ((g_mean, r_mean), (g_logvar, r_logvar), (g_dec, r_dec)):
    ref = ref.transpose(1, 2).numpy()
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
  # decode agrees from the same latents too (not only from our own encode)
  with torch.no_grad():
    z = torch.randn(2, c["embed_dim"], t // down)
    r = tm.decode(z).transpose(1, 2).numpy()
  np.testing.assert_allclose(np.asarray(dec(params, jnp.asarray(z.transpose(1, 2).numpy()))), r,
                             rtol=1e-5, atol=1e-5 * np.abs(r).max())


def test_stat_buffers_and_errors(tmp_path):
  cfg = mv.MMAudioVAEConfig(**C16)
  sd = {k: v.detach().numpy().copy() for k, v in _torch_vae(C16, seed=1).state_dict().items()}
  bad = dict(sd)
  del bad["decoder.up.1.upsample.conv.weight"]
  with pytest.raises(CheckpointError, match="decoder.up.1.upsample.conv.weight"):
    fam.import_mmaudio_vae(bad, cfg)
  bad = dict(sd, data_mean=np.zeros((1, 80, 1), np.float32))
  with pytest.raises(CheckpointError, match="data_mean"):
    fam.import_mmaudio_vae(bad, cfg)
  bad = dict(sd, **{"encoder.conv_in.weight": np.zeros((8, 80, 5), np.float32)})
  with pytest.raises(CheckpointError, match="shape mismatches.*encoder.conv_in.weight"):
    fam.import_mmaudio_vae(bad, cfg)
  # files: torch .pth (weights_only) and safetensors give the same params
  from safetensors.numpy import save_file
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "vae.pth")
  save_file(sd, str(tmp_path / "vae.safetensors"))
  _, p1 = fam.load_mmaudio_vae(str(tmp_path / "vae.pth"), cfg)
  _, p2 = fam.load_mmaudio_vae(str(tmp_path / "vae.safetensors"), cfg)
  for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_paper_configs_and_gradients():
  c16, c44 = mv.mmaudio_vae_16k(), mv.mmaudio_vae_44k()
  s16 = fam.param_shapes(c16)
  assert s16[("encoder", "conv_in", "weight")] == (3, 80, 384)
  assert s16[("encoder", "conv_out", "weight")] == (3, 1536, 40)
  assert s16[("decoder", "conv_in", "weight")] == (3, 20, 1536)
  assert ("decoder", "up", "1") not in s16 and ("decoder", "up_1", "upsample", "conv", "weight") in s16
  assert not any("attn_0" in p for path in s16 for p in path)   # attention only in the mid blocks
  assert fam.param_shapes(c44)[("decoder", "conv_out", "weight")] == (3, 512, 128)
  assert c16.temporal_downsample == 2 and 16000 / 256 / c16.temporal_downsample == 31.25
  # gradients flow through the weight normalisation, the gains and the attention (tiny config: XLA CPU
  # compile time grows with the number of layers, so one block per level, two levels)
  # (params come from the PyTorch definition: flax's random init costs more XLA compile time than the test)
  small = dict(C16, data_dim=12, ch_mult=(1, 2), num_res_blocks=1)
  cfg = mv.MMAudioVAEConfig(**small)
  model = mv.MMAudioVAE(cfg)
  params = fam.import_mmaudio_vae({k: v.detach().numpy() for k, v in _torch_vae(small, 2).state_dict().items()}, cfg)
  mel = jnp.asarray(np.random.default_rng(0).standard_normal((1, 8, 12)).astype(np.float32))

  def loss(p):
    rec, mean, logvar = model.apply({"params": p}, mel, jax.random.PRNGKey(1))
    return jnp.mean(jnp.abs(rec - mel)) + 1e-3 * jnp.mean(mv.kl_divergence(mean, logvar))

  grads = jax.jit(jax.grad(loss))(params)
  for path in [("encoder", "learnable_gain"), ("decoder", "learnable_gain"),
               ("encoder", "mid", "attn_1", "qkv", "weight"), ("decoder", "up_0", "block_0", "conv1", "weight")]:
    g = grads
    for p in path:
      g = g[p]
    assert np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).max() > 0, path
