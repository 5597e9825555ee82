"""SynthCue-sized MMAudio-style mel VAE (16 kHz, 80 log10 mels at 62.5 Hz -> 20-d latents at 31.25 Hz).

Same structure as MMAudio's 16k VAE (EDM2 magnitude-preserving 1-D convs, one 2x temporal downsampling) at
a CPU width: hidden 64, ch_mult (1, 2), one residual block per level, no attention (1.0M parameters).
`python -m unitalking_jax.train_codec --config configs/unitalking/codec_tiny.py --workdir DIR`
-> DIR/codec/ (codec.json + mel_vae.safetensors): shared.models.av_codec.load_mel_vae_audio_codec(DIR).
"""
import ml_collections

from shared.config import trainer_config


def get_config(arg: str = ""):
  del arg
  c = ml_collections.ConfigDict()
  c.trainer = trainer_config()
  c.trainer.total_steps = 1500
  c.trainer.batch_size = 16
  c.trainer.log_every = 50
  c.trainer.eval_every = 250
  c.trainer.sample_every = 500
  c.trainer.optimizer.learning_rate = 2e-3
  c.trainer.optimizer.weight_decay = 0.0
  c.trainer.schedule.warmup_steps = 50
  c.trainer.schedule.final_ratio = 0.05
  c.trainer.checkpoint.every_steps = 500
  c.trainer.precision.compute_dtype = "float32"
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
