"""UniTalking at paper size: video stream = Wan2.2-TI2V-5B, audio twin of the same width (SPECS.md § UniTalking).

Sizes: dim 3072 (24 heads x 128), ffn 14336, freq_dim 256, 30 layers, patch (1, 2, 2), eps 1e-6, text_dim 4096
(UMT5-XXL features, text length 512), video latents 48 channels (Wan2.2 VAE, stride (4, 16, 16)), audio latents
20 channels (MMAudio 16k VAE, 31.25 Hz), reference audio 257 tokens. 121 frames at 24 fps, 704x1280 ->
latents [31, 44, 80, 48] -> 31 * 22 * 40 = 27,280 video tokens; 5 s of audio -> 157 latent frames.
The data section (real clips + UMT5 features + VAE latents) needs the codecs issue's encoders; this file
fixes the model/trainer sizes and is what the sharding plan below refers to. It is not runnable on a CPU.

Parameters: per block ~ 2 x (4 D^2 attn1 + 4 D^2 attn2 + 2 D ffn) + 2 ref K/V D^2 ~ 2 x 207M ~ 0.42B (video
~0.17B + audio twin ~0.17B + ref K/V ~0.02B) -> 30 layers ~ 10.5B with embedders; float32 params 42 GB,
Adam moments 84 GB, grads 42 GB: ~170 GB of state before activations.

Sharding / memory plan (logical rules in shared/mesh.py; only the config changes):
- v5p-64 (32 chips, 95 GB HBM each): mesh fsdp=32 (data=-1 collapses to 1). "embed" -> fsdp: every weight
  matrix is split over 32 chips (~5.3 GB of state per chip), all-gathered per scanned layer. Sequence
  27,280 + 157 tokens per example; remat "dots" (save matmul outputs) -> ~1.5 GB of saved activations per
  layer per example in bf16; per-chip batch 1 with gradient accumulation (accumulate_steps) to reach the
  global batch. Attention through shared.kernels "splash" (block masks for TV2A skip video->audio tiles).
- 8 x H200 (141 GB each): mesh fsdp=8, remat "full" (recompute everything: activations of one layer at a
  time, ~15 GB peak at 27k tokens with cuDNN/Pallas flash attention), per-GPU batch 1, state ~21 GB per GPU.
  For longer clips add sequence=2 (sequence parallel over the token axis, "length" rule) and fsdp=4.
- bf16 compute (trainer.precision.compute_dtype), float32 params / norms / softmax / losses.
"""
from configs.unitalking import tiny


def get_config(arg: str = ""):
  c = tiny.get_config(arg)
  c.model.video.update(dict(num_attention_heads=24, attention_head_dim=128, num_layers=30, ffn_dim=14336,
                            patch_size=(1, 2, 2), freq_dim=256, text_dim=4096, attention_impl="auto"))
  c.model.update(dict(audio_ffn_dim=14336, audio_time_scale=31.0 / 157.0, audio_hw_pos=(0.0, 0.0),
                      text_vocab=0, text_positions=0,   # UMT5 features (data.text = "umt5") carry positions
                      mask_text=False))  # Wan2.2's DiT was trained attending to the zero rows
  # UMT5-XXL from the Wan2.2 diffusers release (set both: --config.data.text_encoder=DIR/text_encoder ...)
  c.data.update(dict(text="umt5", frames=31, text_len=512, video_pca=48, audio_pca=20, text_tokenizer="", text_encoder="",
                     text_encoder_dtype="bfloat16"))
  c.trainer.precision.compute_dtype = "bfloat16"
  c.trainer.remat = "full"
  c.trainer.batch_size = 64
  c.trainer.mesh.update(dict(data=1, fsdp=-1))
  c.trainer.optimizer.learning_rate = 1e-5
  c.trainer.total_steps = 100_000
  c.sampling.update(dict(sampler="unipc", steps=50, shift=5.0, text_scale=5.0, ref_scale=2.0))
  c.objective.timestep_shift = 5.0
  c.objective.p_independent_sigma = 0.0   # the paper's objective: one σ per example for both streams
  return c
