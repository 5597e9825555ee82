"""SynthCue-sized MMAudio-style mel VAE (16 kHz, 80 log10 mels at 62.5 Hz -> 20-d latents at 31.25 Hz).

Same structure as MMAudio's 16k VAE (EDM2 magnitude-preserving 1-D convs, one 2x temporal downsampling) at
a CPU width: hidden 64, ch_mult (1, 2), one residual block per level, no attention (1.0M parameters).
`python -m unitalking_jax.train_codec --config configs/unitalking/codec_tiny.py --workdir DIR`
-> DIR/codec/ (codec.json + mel_vae.safetensors): shared.models.av_codec.load_mel_vae_audio_codec(DIR).

`--config configs/unitalking/codec_tiny.py:video` instead trains a tiny Wan2.2-style video VAE (residual
paths, 2x2 patchify, base 16, dim_mult (1, 2, 2), z 8, stride 4x8x8) on 32x32 SynthCue speech-mode faces,
9-frame clips (3 latent frames of 4x4x8) -> DIR/video_vae (diffusers AutoencoderKLWan layout):
shared.models.av_codec.load_wan_video_codec(DIR/video_vae).
"""
import ml_collections

from shared.config import trainer_config
from shared.errors import ConfigError


def _trainer(**overrides):
  """What both codecs' trainers share."""
  return trainer_config(
      log_every=50, eval_every=250, sample_every=500, optimizer=dict(learning_rate=2e-3, weight_decay=0.0),
      schedule=dict(warmup_steps=50, final_ratio=0.05), checkpoint=dict(every_steps=500),
      precision=dict(compute_dtype="float32"), **overrides)


def get_config(arg: str = ""):
  """arg "" / "audio": the mel VAE; "video": the Wan-style video VAE."""
  if arg == "video":
    return video_config()
  if arg not in ("", "audio"):
    raise ConfigError(f"codec_tiny.py:{arg}: expected ':audio' (the default) or ':video'")
  c = ml_collections.ConfigDict()
  c.codec = "audio"
  c.trainer = _trainer(total_steps=1500, batch_size=16)
  c.model = ml_collections.ConfigDict(dict(
      mel="mmaudio_16k", embed_dim=20, hidden_dim=64, ch_mult=(1, 2), num_res_blocks=1, attn_layers=(),
      down_layers=(0,), num_heads=1))
  c.loss = ml_collections.ConfigDict(dict(kl_weight=1e-3))
  c.data = ml_collections.ConfigDict(dict(
      seed=0, num_samples=100_000, lexicon_size=24, n_speakers=8, n_test_speakers=2, clauses=(1, 1),
      segment_frames=64,      # training crops: 64 mel frames = 1.02 s (32 latents)
      eval_frames=128,        # held-out utterances padded with silence to 2.05 s; metrics over real frames only
      eval_samples=32, stats_samples=64, workers=0))
  c.sampling = ml_collections.ConfigDict(dict(num=3, griffin_lim_iters=32))
  return c


def video_config():
  c = ml_collections.ConfigDict()
  c.codec = "video"
  c.trainer = _trainer(total_steps=1000, batch_size=8)
  c.model = ml_collections.ConfigDict(dict(
      base_dim=16, decoder_base_dim=None, z_dim=8, dim_mult=(1, 2, 2), num_res_blocks=1,
      temporal_downsample=(True, True), is_residual=True, patch_size=2))
  c.loss = ml_collections.ConfigDict(dict(kl_weight=1e-4))
  c.data = ml_collections.ConfigDict(dict(
      seed=0, num_samples=100_000, lexicon_size=24, n_speakers=8, n_test_speakers=2, clauses=(1, 1),
      frame_size=32,          # SynthCue faces rendered at 32x32
      clip_frames=9,          # 1 + 4k frames per clip (3 latent frames)
      augment=True,           # colour / flip augmentation: 6 training speakers give few colours
      eval_samples=16, stats_samples=32, workers=0))
  c.sampling = ml_collections.ConfigDict(dict(num=2, scale=4, mp4=True))
  return c
