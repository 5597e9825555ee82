"""The AV codec interface (shared.models.av_codec) and the SynthCue mel-VAE trainer (unitalking_jax.train_codec):
rate alignment, normalisation, round trips through saved files, and a short training run whose held-out mel
reconstruction error falls clearly below its initial value."""
from __future__ import annotations

import dataclasses
import json
import os
from fractions import Fraction

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.unitalking.codec_tiny import get_config
from shared import mesh as mesh_lib, train as train_lib
from shared.data import features
from shared.errors import CheckpointError, ConfigError, DataError
from shared.models import av_codec, mmaudio_vae, wan_vae
from unitalking_jax import train_codec, train_video_codec

WAN = wan_vae.WanVAEConfig(base_dim=8, z_dim=4, dim_mult=(1, 2, 2), num_res_blocks=1,
                           temporal_downsample=(True, True), latents_mean=(0.1, -0.2, 0.3, 0.0),
                           latents_std=(1.5, 0.5, 2.0, 1.0))
VAE = mmaudio_vae.MMAudioVAEConfig(data_dim=80, embed_dim=4, hidden_dim=16, ch_mult=(1, 2), num_res_blocks=1,
                                   attn_layers=(1,), down_layers=(0,))


def random_params(abstract, seed: int = 0):
  """Random params of the abstract init's shapes (compiling the Wan VAE's init takes a minute on a CPU):
  kernels N(0, 1 / fan_in), 1-d leaves ones (norm gains) or zeros (biases)."""
  rng = np.random.default_rng(seed)

  def leaf(path, x):
    name = str(path[-1])
    if len(x.shape) >= 2:
      return jnp.asarray(rng.normal(0, 1 / np.sqrt(np.prod(x.shape[:-1])), x.shape), jnp.float32)
    return jnp.ones(x.shape, jnp.float32) if "gamma" in name or "scale" in name else jnp.zeros(x.shape, jnp.float32)
  return jax.tree_util.tree_map_with_path(leaf, nn.meta.unbox(abstract)["params"])


@pytest.fixture(scope="module")
def codecs():
  wan = wan_vae.AutoencoderKLWan(WAN)
  params = random_params(jax.eval_shape(wan.init, jax.random.key(0), jnp.zeros((1, 5, 4, 4, 3), jnp.float32)))
  # whole-clip encode / decode: one compilation each (chunked == whole is tests/models/test_wan_vae.py's)
  video = av_codec.WanVideoCodec(wan, params, encode_chunk=None, decode_chunk=None)
  vae = mmaudio_vae.MMAudioVAE(VAE)
  stats = av_codec.LatentStats(np.array([0.5, -1.0, 0.0, 2.0]), np.array([2.0, 0.5, 1.0, 4.0]))
  audio = av_codec.MelVAEAudioCodec(vae, mmaudio_vae.init_params(vae, jax.random.key(1)), stats=stats,
                                    griffin_lim_iters=2)
  return av_codec.AVCodec(video, audio)


def test_latent_stats_round_trip_and_fit():
  rng = np.random.default_rng(0)
  z = rng.normal(3.0, 2.0, (5, 7, 6)).astype(np.float32) * np.arange(1, 7, dtype=np.float32)
  s = av_codec.LatentStats.fit(z)
  n = s.normalize(z)
  np.testing.assert_allclose(n.reshape(-1, 6).mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(n.reshape(-1, 6).std(0), 1.0, atol=1e-5)
  np.testing.assert_allclose(s.denormalize(n), z, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(s.normalize(jnp.asarray(z))), n, rtol=1e-5, atol=1e-5)
  with pytest.raises(DataError, match="6 channels"):
    s.normalize(z[..., :5])
  with pytest.raises(ConfigError):
    av_codec.LatentStats(np.zeros(3), np.array([1.0, 0.0, 1.0]))


def test_rate_alignment_defaults():
  a = av_codec.RateAlignment()   # 25 fps, Wan stride 4 (causal), audio latents at 31.25 Hz
  assert a.video_latent_rate == 6.25 and a.audio_per_video_latent == 5
  assert [a.video_latent_frames(t) for t in (1, 4, 5, 8, 9, 33)] == [1, 1, 2, 2, 3, 9]
  assert [a.video_frames(t) for t in (1, 2, 9)] == [1, 5, 33]
  # a clip of t latents spans 1 + 4 (t - 1) frames; its audio latents cover that span: ceil(1.25 T)
  assert [a.audio_latent_frames(t) for t in (1, 2, 9, 21)] == [2, 7, 42, 102]
  assert a.audio_samples(9) == 33 * 640
  for t in range(1, 40):
    n, span = a.audio_latent_frames(t), a.video_frames(t) / 25.0
    assert (n - 1) / 31.25 < span <= n / 31.25
  z = np.arange(2 * 50 * 3, dtype=np.float32).reshape(2, 50, 3)
  cropped = a.align_audio(z, 9)
  assert cropped.shape == (2, 42, 3) and np.array_equal(cropped, z[:, :42])
  padded = a.align_audio(jnp.asarray(z[:, :40]), 9, pad_value=-1.0)
  assert isinstance(padded, jax.Array) and padded.shape == (2, 42, 3)
  assert np.array_equal(np.asarray(padded[:, :40]), z[:, :40]) and np.all(np.asarray(padded[:, 40:]) == -1)
  np.testing.assert_allclose(a.audio_positions(6), [0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-7)
  nc = av_codec.RateAlignment(fps=24, video_stride=4, causal=False, audio_rate=25.0)
  assert nc.video_latent_frames(17) == 4 and nc.audio_per_video_latent == Fraction(25, 6)
  assert nc.audio_latent_frames(4) == 17


def test_av_codec_shapes_rates_and_normalisation(codecs):
  c = codecs
  a = c.alignment
  assert (a.fps, a.video_stride, a.causal, a.audio_rate, a.sample_rate) == (25.0, 4, True, 31.25, 16000)
  assert (c.video_channels, c.audio_channels) == (4, 4)
  frames = np.random.default_rng(0).integers(0, 256, (2, 9, 16, 16, 3), dtype=np.uint8)
  zv = c.encode_video(frames)
  assert zv.shape == (2, 3, 4, 4, 4)
  x = jnp.asarray(frames, jnp.float32) / 127.5 - 1
  mean = c.video._encode(c.video.params, x)   # the raw posterior mean (wan_vae.encode)
  np.testing.assert_allclose(zv, (np.asarray(mean) - np.array(WAN.latents_mean)) / np.array(WAN.latents_std),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(c.encode_video(frames[1]), zv[1], rtol=1e-5, atol=1e-5)   # unbatched == batched
  out = c.decode_video(zv)
  assert out.shape == (2, 9, 16, 16, 3) and out.dtype == np.uint8
  ref = np.asarray(c.video._decode(c.video.params, mean))   # wan_vae.decode of the raw mean
  np.testing.assert_allclose(c.video.decode_video(zv, as_uint8=False), ref, atol=1e-5)

  t = zv.shape[1]
  audio = np.random.default_rng(1).normal(0, 0.1, (2, 9 * 640 + 300)).astype(np.float32)
  za = c.encode_audio(audio, t)
  assert za.shape == (2, c.audio_latent_frames(t), 4) == (2, 12, 4)
  mel = c.audio.encode_mel(audio[:, :9 * 640], 12)
  assert mel.shape == (2, 24, 80)
  want = [features.log_mel(np.pad(x, (0, 24 * 256 - 9 * 640)), features.MMAUDIO_16K)[:24] for x in audio[:, :9 * 640]]
  np.testing.assert_allclose(mel, np.stack(want), rtol=1e-5, atol=1e-5)
  raw, _ = c.audio.vae.apply({"params": c.audio.params}, jnp.asarray(mel), method=mmaudio_vae.MMAudioVAE.encode)
  np.testing.assert_allclose(za, c.audio.stats.normalize(np.asarray(raw)), rtol=1e-4, atol=1e-5)
  lm = c.audio.log_mel(za)
  ref = c.audio.vae.apply({"params": c.audio.params}, raw, method=mmaudio_vae.MMAudioVAE.decode)
  np.testing.assert_allclose(lm, np.asarray(ref), rtol=1e-4, atol=1e-4)
  wav = c.decode_audio(za[0])
  assert wav.shape == (24 * 256,) and np.all(np.isfinite(wav))


def test_codec_files_round_trip(codecs, tmp_path):
  from shared.weights.wan_vae_family import save_wan_vae
  save_wan_vae(codecs.video.model, codecs.video.params, str(tmp_path / "wan"))
  video = av_codec.load_wan_video_codec(str(tmp_path / "wan"))
  frames = np.random.default_rng(2).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
  np.testing.assert_allclose(video.encode_video(frames), codecs.encode_video(frames), rtol=1e-5, atol=1e-5)

  av_codec.save_mel_vae_audio_codec(str(tmp_path / "run" / "codec"), codecs.audio, {"note": "x"})
  meta = json.load(open(tmp_path / "run" / "codec" / "codec.json"))
  assert meta["latent_rate"] == 31.25 and meta["note"] == "x"
  for where in ("run", "run/codec"):   # a train_codec workdir or its codec/ directory
    audio = av_codec.load_mel_vae_audio_codec(str(tmp_path / where))
    assert audio.mel == features.MMAUDIO_16K
    assert dataclasses.replace(audio.vae.config, data_mean=None, data_std=None) == codecs.audio.vae.config
    np.testing.assert_allclose(audio.vae.config.stats(), codecs.audio.vae.config.stats(), rtol=1e-6)
    np.testing.assert_array_equal(audio.stats.std, codecs.audio.stats.std)
    x = np.random.default_rng(3).normal(0, 0.1, 4096).astype(np.float32)
    np.testing.assert_allclose(audio.encode_audio(x), codecs.audio.encode_audio(x), rtol=1e-5, atol=1e-5)
  with pytest.raises(CheckpointError, match="codec.json"):
    av_codec.load_mel_vae_audio_codec(str(tmp_path / "wan"))


def small_config():
  cfg = get_config()
  cfg.trainer.total_steps = 80
  cfg.trainer.batch_size = 8
  cfg.trainer.log_every = 20
  cfg.trainer.eval_every = 0
  cfg.trainer.sample_every = 80
  cfg.trainer.checkpoint.every_steps = 0
  cfg.trainer.checkpoint.async_save = False
  cfg.trainer.schedule.warmup_steps = 10
  cfg.trainer.optimizer.learning_rate = 6e-3
  cfg.model.hidden_dim = 32
  cfg.data.segment_frames = 32
  cfg.data.eval_frames = 112
  cfg.data.eval_samples = 16
  cfg.data.stats_samples = 24
  cfg.sampling.num = 1
  cfg.sampling.griffin_lim_iters = 2
  return cfg


def test_train_codec_reconstruction_improves_and_exports(tmp_path):
  cfg = small_config()
  task = train_codec.make_task(cfg)
  batch = next(task.make_train_iter())
  assert batch["mel"].shape == (8, 32, 80) and batch["mel"].dtype == np.float32
  init = nn.unbox(jax.jit(task.init_params)(jax.random.key(cfg.trainer.seed), batch))   # the trainer's step 0
  before = task.eval_fn({"params": init}, 0)
  # one device: 8 simulated devices on a 2-core box only add collective overhead to this small model
  mesh = mesh_lib.make_mesh(cfg.trainer.mesh, devices=jax.devices()[:1])
  result = train_lib.train(cfg, task, str(tmp_path), mesh=mesh)
  params = jax.device_get(result.state.params)
  after = task.eval_fn({"params": params}, result.step)
  assert result.step == 80
  assert after["mel_l1"] < 0.7 * before["mel_l1"], (before, after)
  assert after["mel_rel_l2"] < 0.8 * before["mel_rel_l2"] and after["mel_rel_l2"] < 1.0, (before, after)
  assert abs(after["mel_l1_db"] - 20 * after["mel_l1"]) < 1e-6
  names = sorted(os.listdir(tmp_path / "samples" / "80"))
  assert names == ["utt0_mel.png", "utt0_orig.wav", "utt0_orig_gl.wav", "utt0_recon_gl.wav"]

  codec = train_codec.export_codec(cfg, task, params, str(tmp_path))
  loaded = train_codec.load_codec(str(tmp_path))
  ev = task.eval_set(cfg, "test", 2)
  audio = ev["audio"][0][:1 + 48 * 256]
  z = loaded.encode_audio(audio)
  assert z.shape == (24, 20)
  zs = np.concatenate([codec.encode_audio(a) for a in task.eval_set(cfg, "train", 8)["audio"]])
  assert abs(zs.mean()) < 0.3 and 0.6 < zs.std() < 1.4      # latent statistics normalise training latents
  mel = loaded.encode_mel(audio)
  rec = loaded.log_mel(z)
  direct = np.asarray(jax.jit(task.model.apply)({"params": params}, jnp.asarray(mel[None]))[0][0])   # jitted: one compile
  np.testing.assert_allclose(rec, direct, rtol=1e-4, atol=1e-4)
  assert np.mean(np.abs(rec - mel)) < before["mel_l1"]


def test_mel_vae_codec_with_bigvgan_vocoder(codecs):
  from shared.models import bigvgan
  cfg = bigvgan.BigVGANConfig(num_mels=80, upsample_rates=(4, 4, 4, 4), upsample_kernel_sizes=(8, 8, 8, 8),
                              upsample_initial_channel=16, resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1,),),
                              sampling_rate=16000, hop_size=256)
  voc = bigvgan.BigVGAN(cfg)
  vparams = nn.meta.unbox(jax.jit(voc.init)(jax.random.key(2), jnp.zeros((1, 4, 80))))["params"]
  a = codecs.audio
  audio = dataclasses.replace(a, vocoder=(voc, vparams))
  z = np.random.default_rng(4).normal(size=(2, 12, 4)).astype(np.float32)
  wav = audio.decode_audio(z)
  assert wav.shape == (2, 24 * 256)
  ref = voc.apply({"params": vparams}, jnp.asarray(a.log_mel(z)))
  np.testing.assert_allclose(wav, np.asarray(ref), rtol=1e-4, atol=1e-5)
  assert np.std(wav) > 0
  bad = bigvgan.BigVGAN(dataclasses.replace(cfg, num_mels=64))
  with pytest.raises(ConfigError, match="64 mels"):
    dataclasses.replace(a, vocoder=(bad, vparams)).decode_audio(z)


# ----------------------------------------------------------------------------------------------- video codec

def small_video_config():
  cfg = get_config("video")
  cfg.trainer.total_steps = 40
  cfg.trainer.batch_size = 4
  cfg.trainer.log_every = 20
  cfg.trainer.eval_every = 0
  cfg.trainer.sample_every = 40
  cfg.trainer.checkpoint.every_steps = 0
  cfg.trainer.checkpoint.async_save = False
  cfg.trainer.schedule.warmup_steps = 5
  cfg.trainer.optimizer.learning_rate = 5e-3
  cfg.model.base_dim = 8
  cfg.model.z_dim = 4
  cfg.data.clip_frames = 5
  cfg.data.augment = False      # 40 steps: learn the training speakers' colours (the full config augments)
  cfg.data.eval_samples = 8
  cfg.data.stats_samples = 8
  cfg.sampling.num = 1
  cfg.sampling.scale = 2
  return cfg


def test_codec_config_selection():
  assert get_config().codec == "audio" and get_config("audio").codec == "audio"
  v = get_config("video")
  assert v.codec == "video" and train_codec.codec_kind(v) == "video"
  c = train_video_codec.vae_config(v)
  assert (c.is_residual, c.patch_size, c.in_channels, c.spatial_stride, c.temporal_stride) == (True, 2, 12, 8, 4)
  with pytest.raises(ConfigError, match="video"):
    get_config("vidoe")
  v.data.clip_frames = 8
  with pytest.raises(ConfigError, match="clip_frames"):
    train_video_codec.make_task(v)


@pytest.mark.slow  # ~90 s alone, 150-180 s on the shared 2-core box: compiling the Wan VAE's init, train step,
# encode / decode dominates (training itself is ~12 s); `-m "not slow"` keeps test_codec_config_selection
def test_train_video_codec_reconstruction_improves_and_exports(tmp_path):
  cfg = small_video_config()
  task = train_video_codec.make_task(cfg)
  batch = next(task.make_train_iter())
  assert batch["video"].shape == (4, 5, 32, 32, 3) and batch["video"].dtype == np.uint8
  init = nn.unbox(jax.jit(task.init_params)(jax.random.key(cfg.trainer.seed), batch))   # the trainer's step 0
  before = task.eval_fn({"params": init}, 0)
  mesh = mesh_lib.make_mesh(cfg.trainer.mesh, devices=jax.devices()[:1])
  result = train_lib.train(cfg, task, str(tmp_path), mesh=mesh)
  params = jax.device_get(result.state.params)
  after = task.eval_fn({"params": params}, result.step)
  assert result.step == 40
  # held-out utterances of the training speakers: clearly better; unseen speakers (other face / background
  # colours) need far more steps (README), here only reported
  assert after["val_l1"] < 0.75 * before["val_l1"], (before, after)
  assert after["val_psnr"] > before["val_psnr"] + 2.0, (before, after)
  assert np.isfinite(after["l1"]) and after["kl"] > before["kl"]
  assert sorted(os.listdir(tmp_path / "samples" / "40")) == ["clip0.mp4", "clip0.png"]
  from PIL import Image
  assert Image.open(tmp_path / "samples" / "40" / "clip0.png").size == (2 * 5 * 32, 2 * 66)

  train_video_codec.export_codec(cfg, task, params, str(tmp_path))
  loaded = train_video_codec.load_codec(str(tmp_path), encode_chunk=None, decode_chunk=None)
  assert loaded.model.config.z_dim == 4 and loaded.spatial_stride == 8
  train = task.eval_set(cfg, "train", 8)
  _, mean, _ = task.reconstruct(params, train)
  stats = av_codec.LatentStats.fit(mean)
  np.testing.assert_allclose(loaded.model.config.latents_mean, stats.mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(loaded.model.config.latents_std, stats.std, rtol=1e-5, atol=1e-6)
  z = loaded.encode_video(train)
  assert z.shape == (8, 2, 4, 4, 4)
  np.testing.assert_allclose(z, stats.normalize(mean), rtol=1e-4, atol=1e-4)
  assert np.abs(z.reshape(-1, 4).mean(0)).max() < 1e-3 and np.allclose(z.reshape(-1, 4).std(0), 1.0, atol=1e-3)
  test = task.eval_set(cfg, "test", 8)
  rec = loaded.decode_video(loaded.encode_video(test), as_uint8=False)
  np.testing.assert_allclose(rec, task.reconstruct(params, test)[0], atol=1e-4)
