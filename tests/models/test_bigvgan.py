"""BigVGAN: name table and forward parity against NVIDIA's own package (PyPI `bigvgan` 2.4.1, installed with
--no-deps by the Makefile), both directions: their random generator -> import_bigvgan -> our forward == theirs;
our random params -> save_bigvgan (NVIDIA's release layout) -> bigvgan.BigVGAN.from_pretrained(dir) -> the
same waveform. Small configs cover AMPBlock1 + SnakeBeta (log-scale) and AMPBlock2 + Snake (linear scale, tanh,
conv_post bias)."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
bigvgan = pytest.importorskip("bigvgan.bigvgan")
from bigvgan.alias_free_activation.torch.filter import kaiser_sinc_filter1d  # noqa: E402
from bigvgan.env import AttrDict  # noqa: E402

from shared.errors import CheckpointError, ConfigError  # noqa: E402
from shared.models import bigvgan as bv  # noqa: E402
from shared.weights import bigvgan_family as fam  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")

H1 = dict(num_mels=80, upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8], upsample_initial_channel=16,
          resblock="1", resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
          activation="snakebeta", snake_logscale=True, use_tanh_at_final=False, use_bias_at_final=False,
          sampling_rate=16000, hop_size=16, n_fft=64, win_size=64, fmin=0, fmax=8000,
          segment_size=256, lambda_melloss=15)   # + training keys, ignored
H2 = dict(H1, resblock="2", resblock_dilation_sizes=[[1, 3], [2, 1]], activation="snake", snake_logscale=False,
          use_tanh_at_final=True, use_bias_at_final=True, upsample_rates=[2, 3], upsample_kernel_sizes=[4, 7])


def theirs(h: dict, seed: int):
  """NVIDIA's BigVGAN (torch Activation1d, no CUDA kernel) with random weights, snake parameters included."""
  model = bigvgan.BigVGAN(AttrDict(json.loads(json.dumps(h))), use_cuda_kernel=False)
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith(("alpha", "beta")):
        x = 0.3 * torch.randn(p.shape, generator=g)
        p.copy_(x if h["snake_logscale"] else x.abs() + 0.5)   # linear-scale alpha / beta stay away from 0
      elif name.endswith("weight_g"):   # conv_post small: keep clear of the clamp
        p.copy_((0.5 + torch.rand(p.shape, generator=g)) * (0.05 if name.startswith("conv_post") else 1.0))
      else:
        p.copy_(0.2 * torch.randn(p.shape, generator=g))
  return model.eval()


def run_theirs(model, mel: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(mel).transpose(1, 2))[:, 0].numpy()


def from_pretrained(path: str):
  """bigvgan.BigVGAN.from_pretrained(path) for a local directory: their `_from_pretrained` (what from_pretrained
  runs) called directly, since its required proxies / resume_download keywords are no longer passed by the
  installed huggingface_hub's ModelHubMixin (a TypeError otherwise)."""
  return bigvgan.BigVGAN._from_pretrained(model_id=path, revision=None, cache_dir=None, force_download=False,
                                          proxies=None, resume_download=False, local_files_only=True, token=None)


_FORWARD = {}


def ours(cfg, params, mel):
  if cfg not in _FORWARD:
    _FORWARD[cfg] = jax.jit(lambda p, x: bv.BigVGAN(cfg).apply({"params": p}, x))
  return np.asarray(_FORWARD[cfg](params, jnp.asarray(mel)))


def close(got, ref):
  assert 0.01 < np.abs(ref).max() < 0.99, np.abs(ref).max()
  err = np.abs(got - ref).max() / np.abs(ref).max()
  assert err < 1e-5, err


@pytest.mark.parametrize("h", [H1, H2], ids=["amp1_snakebeta", "amp2_snake"])
def test_theirs_to_ours(h):
  """Their random generator's state_dict -> import (strict) -> our forward == theirs; export gives back their
  exact keys (filter buffers included) and values."""
  cfg = fam.config_from_dict(h)
  tm = theirs(h, seed=0)
  sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
  params = fam.import_bigvgan(sd, cfg)
  back = fam.export_bigvgan(params, cfg)
  assert set(back) == set(sd)
  for k in sd:
    np.testing.assert_allclose(back[k], sd[k], rtol=0, atol=1e-7, err_msg=k)
  mel = np.random.default_rng(1).standard_normal((2, 11, h["num_mels"])).astype(np.float32)
  got = ours(cfg, params, mel)
  assert got.shape == (2, 11 * int(np.prod(h["upsample_rates"])))
  close(got, run_theirs(tm, mel))


@pytest.mark.parametrize("h", [H1, H2], ids=["amp1_snakebeta", "amp2_snake"])
def test_ours_to_theirs_release_layout(h, tmp_path):
  """Our random params -> save_bigvgan -> NVIDIA's BigVGAN.from_pretrained(dir) == our forward; load_bigvgan reads
  the same directory back to the same params."""
  cfg = fam.config_from_dict({**h, "mel_log": "log10"})
  params = fam.import_bigvgan({k: v.detach().numpy() for k, v in theirs(h, seed=5).state_dict().items()}, cfg)
  rng = np.random.default_rng(3)   # ours: perturbed away from the torch draw
  params = jax.tree_util.tree_map(lambda x: np.asarray(x) * (1 + 0.1 * rng.standard_normal(x.shape)).astype(
      np.float32), params)
  fam.save_bigvgan(params, cfg, str(tmp_path))
  written = json.loads((tmp_path / "config.json").read_text())
  assert written["use_cuda_kernel"] is False and written["mel_log"] == "log10" and written["num_mels"] == 80
  tm = from_pretrained(str(tmp_path))
  assert not tm.h["use_cuda_kernel"]
  assert set(torch.load(tmp_path / "bigvgan_generator.pt", weights_only=True)) == {"generator"}
  mel = np.random.default_rng(2).standard_normal((1, 9, 80)).astype(np.float32)
  close(run_theirs(tm.eval(), mel), ours(cfg, params, mel))
  model, back = fam.load_bigvgan(str(tmp_path))
  assert model.config == cfg
  for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-7)


def test_other_spellings_import():
  """parametrizations.weight.original0/1 (MMAudio's copy) and weight norm removed (plain .weight) import to the
  same effective model."""
  cfg = fam.config_from_dict(H1)
  tm = theirs(H1, seed=3)
  sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
  params = fam.import_bigvgan(sd, cfg)
  para = fam.export_bigvgan(params, cfg, style="parametrizations")
  assert "conv_pre.parametrizations.weight.original1" in para
  p2 = fam.import_bigvgan(para, cfg)
  for a, b in zip(jax.tree_util.tree_leaves(p2), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  mel = np.random.default_rng(2).standard_normal((1, 7, 80)).astype(np.float32)
  ref = run_theirs(tm, mel)
  tm.remove_weight_norm()   # their inference-time form: plain .weight
  plain = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
  assert "conv_pre.weight" in plain
  close(ours(cfg, fam.import_bigvgan(plain, cfg), mel), ref)


def test_errors_config_defaults_and_file_loading(tmp_path):
  cfg = fam.config_from_dict(H1)
  tm = theirs(H1, seed=4)
  sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
  bad = dict(sd)
  del bad["resblocks.1.convs2.0.weight_v"]
  bad["extra.weight_q"] = np.zeros(3, np.float32)
  with pytest.raises(CheckpointError, match="missing keys.*resblocks.1.convs2.0.weight_v"):
    fam.import_bigvgan(bad, cfg)
  bad = dict(sd, **{"activation_post.upsample.filter": np.ones((1, 1, 12), np.float32)})
  with pytest.raises(CheckpointError, match="activation_post.upsample.filter"):
    fam.import_bigvgan(bad, cfg)
  # their save_pretrained's layout: {"generator": state_dict} in bigvgan_generator.pt next to config.json
  tm.save_pretrained(str(tmp_path))
  model, params = fam.load_bigvgan(str(tmp_path))
  assert model.config == cfg
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(fam.import_bigvgan(sd, cfg))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # keys absent from a config.json take NVIDIA's code defaults (tanh and conv_post bias on), mel_log ln
  v1 = {k: v for k, v in H1.items() if k not in ("use_tanh_at_final", "use_bias_at_final")}
  c1 = fam.config_from_dict(v1)
  nv = bigvgan.BigVGAN(AttrDict(dict(v1)))
  assert c1.use_tanh_at_final == nv.use_tanh_at_final is True
  assert c1.use_bias_at_final == nv.use_bias_at_final is True and c1.mel_log == "ln"
  with pytest.raises(ConfigError, match="mel_log"):
    fam.config_from_dict({**H1, "mel_log": "log2"})
  with pytest.raises(ConfigError, match="mel_log"):
    fam.save_bigvgan({}, bv.BigVGANConfig(), str(tmp_path / "x"))


def test_paper_config_shapes_and_filter():
  cfg = bv.BIGVGAN_V2_44K_128BAND_512X
  assert cfg.upsample_factor == 512 and bv.BIGVGAN_16K_80BAND_256X.upsample_factor == 256
  assert fam.config_from_dict(fam.config_to_dict(cfg)) == cfg
  assert fam.config_from_dict(fam.config_to_dict(bv.BIGVGAN_16K_80BAND_256X)) == bv.BIGVGAN_16K_80BAND_256X
  shapes = fam.param_shapes(cfg)
  assert shapes[("conv_pre", "weight_v")] == (7, 128, 1536)
  assert shapes[("ups_0", "weight_v")] == (16, 1536, 768) and shapes[("ups_0", "weight_g")] == (1536,)
  assert shapes[("resblocks_17", "convs1_2", "weight_v")] == (11, 24, 24)
  assert ("conv_post", "bias") not in shapes
  assert ("conv_post", "bias") in fam.param_shapes(bv.BIGVGAN_16K_80BAND_256X)
  n = sum(int(np.prod(s)) for s in shapes.values())
  assert 120e6 < n < 125e6, n   # NVIDIA reports 122M parameters for this model
  np.testing.assert_allclose(bv.kaiser_sinc_filter(0.25, 0.3, 12),
                             kaiser_sinc_filter1d(0.25, 0.3, 12).numpy().ravel(), rtol=0, atol=1e-7)


def test_mel_convention_mmaudio_log10_times_ln10_is_nvidia_mel():
  """The codec side of a BigVGAN vocoder: NVIDIA's meldataset.mel_spectrogram (ln(clamp(mel, 1e-5)), reflect pad
  (n_fft - hop) / 2, sqrt(|X|^2 + 1e-9), slaney mels) on MMAudio 16k's settings == shared.data.features' MMAudio
  16k log10 mel x ln 10, the factor features.vocoder_mel_scale applies for a natural-log ("ln") vocoder."""
  import math
  from bigvgan.meldataset import mel_spectrogram
  from shared.data import features
  y = (0.3 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
  y[4000:6000] = 0.0    # a silent stretch: the 1e-5 floor matters there
  m = features.MMAUDIO_16K
  theirs = mel_spectrogram(torch.from_numpy(y)[None], m.n_fft, m.n_mels, m.sample_rate, m.hop, m.win, m.fmin,
                           m.fmax)[0].numpy().T
  ours = features.log_mel(y, m) * features.vocoder_mel_scale("ln", m.log)
  assert features.vocoder_mel_scale("ln", "log10") == pytest.approx(math.log(10.0))
  assert features.vocoder_mel_scale(None, "log10") == 1
  assert ours.shape == theirs.shape and theirs.min() == pytest.approx(math.log(1e-5), abs=1e-4)
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3)
