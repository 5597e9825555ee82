"""UniTalking at paper size: video stream = Wan2.2-TI2V-5B, audio twin of the same width (SPECS.md § UniTalking).

Sizes: dim 3072 (24 heads x 128), ffn 14336, freq_dim 256, 30 layers, patch (1, 2, 2), eps 1e-6, text_dim 4096
(UMT5-XXL features, text length 512), video latents 48 channels (Wan2.2 VAE, stride (4, 16, 16)), audio latents
20 channels (MMAudio 16k VAE, 31.25 Hz), reference audio 257 tokens. 121 frames at 24 fps, 704x1280 ->
latents [31, 44, 80, 48] -> 31 * 22 * 40 = 27,280 video tokens; 5 s of audio -> 157 latent frames.
The data section (real clips + UMT5 features + VAE latents) needs the codecs issue's encoders; this file
fixes the model/trainer sizes and is what the sharding plan below refers to. It is not runnable on a CPU.

Parameters: 10.566 B (measured on the abstract TrainState; per block ~ 2 x (4 D^2 attn1 + 4 D^2 attn2 + 2 D ffn)
+ 2 ref K/V D^2 ~ 0.42B, x 30 layers, + embedders): float32 params 42.3 GB, Adam moments 84.5 GB; gradients are
XLA temporaries of the step (in "temp" below), not state.

Measured memory (shared/scaling/aot.py: the real train step compiled ahead of time by libtpu's XLA:TPU for the
slice, abstract shapes; per chip; peak = argument + output - alias + temp; remat "full" as configured; attention
compiled as XLA einsums, chunked over queries - shared.kernels picks by the compiling process's backend, so not
splash; `python -m shared.scaling compile --config configs/unitalking/wan22_5b.py --topology v5p-64`):
- As this file's data section stands (32 px face crops of SynthCue: latents [31, 4, 4, 48], 124 video tokens,
  UMT5 text [512, 4096]), batch 64:
    v5p-64, fsdp=32, 2 per chip: TrainState 3.73 GiB (params 1.24 + Adam 2.48); argument 3.75, output 3.73,
      alias 3.73, temp 2.93 GiB -> peak 6.68 GiB of 95 GiB: fits.
    v5p-8, fsdp=4, 16 per chip: TrainState 29.55 GiB (9.85 + 19.70); argument 29.68, output 29.55, alias 29.55,
      temp 20.28 GiB -> peak 49.96 GiB: fits.
- At the paper's token count (--config.data.face_crop=0 --config.data.frame_size=960 --config.data.pixel_factor=16: latents
  [31, 60, 60, 48] = 27,900 video tokens per example, vs 27,280 at 704x1280; audio stays 31 tokens), batch 64:
    v5p-64, fsdp=32, 2 per chip: argument 3.83, output 3.73, alias 3.73, temp 82.61 GiB -> peak 86.44 GiB
      (91 % of 95 GiB): fits, narrowly; with trainer.optimizer.accumulate_steps=2 (micro-batch 1 per chip):
      temp 41.65 GiB -> peak 45.48 GiB (48 %).
    v5p-8, fsdp=4, 16 per chip: XLA refuses the program: HLO temporaries 450.68 GiB > 95.74 GiB available (+ 29.6
      GiB of state): does not fit. Even with accumulate_steps=16 (micro-batch 1 per chip): argument 30.36,
      output 29.55, alias 29.55, temp 82.62 GiB -> peak 112.98 GiB (119 %): does not fit - 4 chips are too few
      for this model at this length (more chips, or sequence parallelism / a smaller remat footprint).
  XLA's FLOPs (cost analysis, which counts the scanned layer body once, not 30 times): 5.92e11 per chip as
  configured, 5.09e13 per chip at the paper token count, on v5p-64. Analytic (shared/scaling/flops.py, matmuls
  x 3, all 30 layers): 5.07e14 per step as configured, 1.04e17 at the paper token count (1.63e15 per example);
  with the layer scan counted once like XLA: 2.84e13 / 2.33e15 global, 1.50x / 1.43x XLA's 1.89e13 / 1.63e15
  (unexplained: on the tiny config the same ratio is 0.93-0.95).
- 8 x H200 (h200x8: XLA:GPU for an H200 target through the jax-cuda12-plugin / -pjrt wheels, compile-only
  devices, no GPU; Triton GEMMs and autotuning off), fsdp=8, 8 per GPU: TrainState 14.79 GiB (4.93 + 9.86).
    As this file stands: argument 14.86, output 14.79, alias 14.79, temp 8.86 GiB -> peak 23.72 GiB of 131 GiB
      (141 GB): fits.
    Paper token count: temp 250.65 GiB -> peak 265.67 GiB: does not fit (XLA's own rematerialisation could not
      get below 265 GiB); with trainer.optimizer.accumulate_steps=8 (micro-batch 1 per GPU): temp 42.32 GiB ->
      peak 57.33 GiB (44 %): fits.

Sharding plan (logical rules in shared/mesh.py; only the config changes):
- v5p-64 (32 chips): mesh fsdp=32 (data=-1 collapses to 1). "embed" -> fsdp: every weight matrix is split over
  32 chips, all-gathered per scanned layer. Sequence 27,280 + 157 tokens per example; gradient accumulation
  (accumulate_steps) to reach the global batch. Attention through shared.kernels "splash" on the TPU itself
  (block masks for TV2A skip video->audio tiles).
- 8 x H200 (141 GB each): mesh fsdp=8, remat "full" (recompute everything: activations of one layer at a
  time), per-GPU batch 1. For longer clips add sequence=2 (sequence parallel over the token axis, "length"
  rule) and fsdp=4.
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
                     latents="",   # prepared latents dir (python -m unitalking_jax.prepare): no codec in the loop
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
