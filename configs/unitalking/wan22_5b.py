"""UniTalking at paper size: video stream = Wan2.2-TI2V-5B, audio twin of the same width (SPECS.md § UniTalking).

Sizes: dim 3072 (24 heads x 128), ffn 14336, freq_dim 256, 30 layers, patch (1, 2, 2), eps 1e-6, text_dim 4096
(UMT5-XXL features, text length 512), video latents 48 channels (Wan2.2 VAE, stride (4, 16, 16)), audio latents
20 channels (MMAudio 16k VAE, 31.25 Hz), reference audio 257 tokens. 121 frames at 24 fps, 704x1280 ->
latents [31, 44, 80, 48] -> 31 * 22 * 40 = 27,280 video tokens; 5 s of audio -> 157 latent frames.

The code path (data.video_codec = "wan_vae", data.audio_codec = "mel_vae", data.text = "umt5"; the model of
`get_config()` below): 121 frames at 25 fps (1 + 4 x 30), square 704 px frames (the data path crops squares:
704x704 -> latents [31, 44, 44, 48], 31 x 22 x 22 = 15,004 video tokens), audio latents ceil(121 x 1.25) = 152
of 20 channels, one per token at RoPE time i / 5 (audio_time_scale 0.2), reference tokens [257, 20]: the paper's
fixed reference length (data.ref_len = 257; a token is one mel-VAE audio latent, model.audio_patch = 1: 2 mel
frames = 512 samples = 32 ms, so 257 tokens = 8.2 s of voice): in training a clip's own 152 latents (permuted)
then 105 zero rows; at sampling a user's --ref_audio is read at its own length, truncated / zero-padded to 257.
The paths a user sets (all local; nothing is downloaded):
  --config.data.video_codec_path=WAN/vae            the Wan2.2-TI2V-5B-Diffusers vae/ (AutoencoderKLWan)
  --config.data.audio_codec_path=MEL                a mel VAE codec directory (codec.json + mel_vae.safetensors:
                                                    shared.models.av_codec.save_mel_vae_audio_codec of MMAudio's
                                                    v1-16.pth with latent statistics fitted on the data, or
                                                    `python -m unitalking_jax.train_codec` DIR/codec)
  --config.data.text_encoder=WAN/text_encoder --config.data.text_tokenizer=WAN/tokenizer   (UMT5-XXL)
  --config.data.vocoder_path=VOC                    (optional; else Griffin-Lim) a BigVGAN directory in NVIDIA's
                                                    layout (config.json + bigvgan_generator.pt), used to decode
                                                    and written into the release's vocoder/: MMAudio's 16 kHz
                                                    BigVGAN (ext_weights/best_netG.pt, 80 mels, hop 256)
                                                    converted with shared.weights.bigvgan_family (import_bigvgan
                                                    + save_bigvgan with shared.models.bigvgan.BIGVGAN_16K_80BAND_256X,
                                                    whose mel_log "log10" is MMAudio's mel); its config.json's
                                                    num_mels / sampling_rate / hop_size / n_fft / fmin / fmax
                                                    must be the mel VAE's (ConfigError otherwise)
  --config.init.video.path=WAN/transformer          (optional: the Wan2.2 DiT into the video stream)
then `python -m unitalking_jax.prepare --config configs/unitalking/wan22_5b.py ... --layout lrs3 --root LRS3
--out LATENTS` and `python -m unitalking_jax.train ... --config.data.latents=LATENTS`.

`wan22_5b.py:smoke` is the same function with tiny sizes only (this is what the suite runs on a CPU,
tests/unitalking/test_smoke.py): dim 32 (2 heads x 16), 2 layers, ffn 64, freq_dim 16, text_dim 32 (a tiny
random UMT5 in transformers layout), text length 16, 9 frames of 32 px, a tiny random Wan2.2-structured VAE
(residual, 2x2 patchify, stride 4x16x16, z 48) and a tiny MMAudio-structured mel VAE (80 mels -> 20 channels at
31.25 Hz), batch 2, float32, no remat, Euler 2 steps, 16 reference tokens (12 latents + 4 zero rows); the
paths again from the command line (or the test, which also gives a tiny random BigVGAN as data.vocoder_path).

Parameters: 10.566 B (measured on the abstract TrainState; per block ~ 2 x (4 D^2 attn1 + 4 D^2 attn2 + 2 D ffn)
+ 2 ref K/V D^2 ~ 0.42B, x 30 layers, + embedders): float32 params 42.3 GB, Adam moments 84.5 GB; gradients are
XLA temporaries of the step (in "temp" below), not state.

Measured memory below was taken with the earlier data section (PCA latents of 32 px SynthCue face crops, 31
latent frames; and the paper's token count), not re-measured for the 704 px default above
(shared/scaling/aot.py: the real train step compiled ahead of time by libtpu's XLA:TPU for the
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
from shared.errors import ConfigError

# name -> (model sizes, data sizes, trainer / sampling sizes): the ONLY things :smoke changes
SIZES = {
    "": dict(video=dict(num_attention_heads=24, attention_head_dim=128, num_layers=30, ffn_dim=14336, freq_dim=256,
                        text_dim=4096),
             audio_ffn_dim=14336,
             data=dict(frames=121, side=704, text_len=512, text_encoder_dtype="bfloat16", video_codec_chunk=4,
                       ref_len=257),
             trainer=dict(compute_dtype="bfloat16", remat="full", batch_size=64, total_steps=100_000),
             sampling=dict(steps=50)),
    "smoke": dict(video=dict(num_attention_heads=2, attention_head_dim=16, num_layers=2, ffn_dim=64, freq_dim=16,
                             text_dim=32),
                  audio_ffn_dim=64,
                  data=dict(frames=9, side=32, text_len=16, text_encoder_dtype="float32", video_codec_chunk=0,
                            ref_len=16),
                  trainer=dict(compute_dtype="float32", remat="none", batch_size=2, total_steps=2),
                  sampling=dict(steps=2)),
}


def get_config(arg: str = ""):
  """arg "": paper size; "smoke": the same code path at tiny sizes (module docstring); ",stage1" after either (or
  "stage1" alone): the audio-branch pre-training stage of that config (audio_pretrain.audio_stage)."""
  size, _, stage = arg.partition(",")
  if size == "stage1" and not stage:
    size, stage = "", "stage1"
  if size not in SIZES or stage not in ("", "stage1"):
    raise ConfigError(f"wan22_5b.py:{arg}: expected no argument, ':smoke', ':stage1' or ':smoke,stage1'")
  z = SIZES[size]
  c = tiny.get_config()
  c.model.video.update(dict(patch_size=(1, 2, 2), attention_impl="auto", **z["video"]))
  c.model.update(dict(audio_ffn_dim=z["audio_ffn_dim"],
                      text_vocab=0, text_positions=0,   # UMT5 features (data.text = "umt5") carry positions
                      mask_text=False))  # Wan2.2's DiT was trained attending to the zero rows
  # the trained codecs: Wan2.2 VAE (stride 4x16x16, z 48) and the MMAudio 16k mel VAE (20 channels, 31.25 Hz)
  tiny.vae_codecs(c, frames=z["data"]["frames"], side=z["data"]["side"], stride=16, video_channels=48,
                  audio_channels=20, audio_patch=1)
  # UMT5-XXL from the Wan2.2 diffusers release (set both: --config.data.text_encoder=DIR/text_encoder ...)
  c.data.update(dict(text="umt5", text_len=z["data"]["text_len"], text_tokenizer="", text_encoder="",
                     latents="",   # prepared latents dir (python -m unitalking_jax.prepare): no codec in the loop
                     text_encoder_dtype=z["data"]["text_encoder_dtype"],
                     video_codec_chunk=z["data"]["video_codec_chunk"],
                     ref_len=z["data"]["ref_len"],   # the paper's fixed reference length (docstring)
                     vocoder_path=""))   # a BigVGAN dir in NVIDIA's layout (docstring); "" = Griffin-Lim
  t = z["trainer"]
  c.trainer.precision.compute_dtype = t["compute_dtype"]
  c.trainer.remat = t["remat"]
  c.trainer.batch_size = t["batch_size"]
  c.trainer.mesh.update(dict(data=1, fsdp=-1))
  c.trainer.optimizer.learning_rate = 1e-5
  c.trainer.total_steps = t["total_steps"]
  c.sampling.update(dict(sampler="unipc", steps=z["sampling"]["steps"], shift=5.0, text_scale=5.0, ref_scale=2.0))
  c.objective.timestep_shift = 5.0
  c.objective.p_independent_sigma = 0.0   # the paper's objective: one σ per example for both streams
  if stage:
    from configs.unitalking.audio_pretrain import audio_stage
    audio_stage(c)
  return c
