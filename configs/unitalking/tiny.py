"""UniTalking on SynthCue speech clips, CPU-sized: 32x32 face crops (of 80 px frames, located from the eye
landmarks, as talking-face data is cropped), 32 frames (1.28 s), 64-bin mels.

Video latents: space-to-depth 8 + PCA to 24 channels [32, 4, 4, 24], patch (1, 2, 2) -> 4 tokens of 96 values
per frame (128 video tokens); audio latents: 128 mel frames (64 bins) + PCA to 16 channels, 4 frames per token
(32 audio tokens of 64 values, one per video frame: the same RoPE time axis). Tokens are narrower than the
model (128) - a 128-wide model cannot carry 768 noise values per token (raw 8x8 patches did not learn).
The video PCA is whitened (each component unit variance, as VAE latents are normalised per channel): with one
global scale the mouth's motion was ~3 % of the mouth tokens' variance, hidden under the noise until the last
sampling steps, and T2AV mouths never learnt to move. Text: pinyin syllable ids into a learned table plus a
learned position table (without it the cross-attention sees a bag of syllables, not their order).
Objective: 30 % of examples draw the video σ apart from the audio σ (objective.p_independent_sigma), so each
stream also learns to follow the other when it is cleaner; with both fixes 3,000 steps give T2AV clips whose
audio energy follows the generated mouth (README, "UniTalking").
`python -m unitalking_jax.train --config configs/unitalking/tiny.py --workdir DIR`   (`make train`)

`tiny.py:vae_codecs`: the same model on the TRAINED tiny codecs instead of PCA (data.video_codec="wan_vae",
data.audio_codec="mel_vae"; unitalking_jax/data.py): the Wan2.2-style video VAE of
`python -m unitalking_jax.train_codec --config configs/unitalking/codec_tiny.py:video --workdir V` (trained on
whole 32x32 SynthCue frames, so here frame_size=32 and no face crop; stride 4x8x8, z 8) and the mel VAE of
`... codec_tiny.py --workdir A` (20 channels at 31.25 Hz), paths given on the command line:
  --config.data.video_codec_path=V --config.data.audio_codec_path=A
33 frames (1.32 s, 1 + 4 k) -> video latents [9, 4, 4, 8] (36 tokens of 2x2 patches), audio latents [42, 20]
(one token each, RoPE time i / 5 in video-latent frames: audio_time_scale 0.2); reference tokens [42, 20].
"""
import ml_collections

from shared.config import model_section, trainer_config
from shared.errors import ConfigError
from shared.text.pinyin import pinyin_vocab
from shared.weights.init import init_entry
from unitalking_jax.data import MEL_PER_FRAME
from unitalking_jax.model import WAN_VIDEO_RENAME, UniTalkingConfig


def get_config(arg: str = ""):
  """arg "": PCA codecs (fitted on SynthCue); "vae_codecs": the trained tiny Wan / mel VAEs (docstring)."""
  if arg not in ("", "vae_codecs"):
    raise ConfigError(f"tiny.py:{arg}: expected no argument or ':vae_codecs'")
  c = ml_collections.ConfigDict()
  c.trainer = trainer_config(total_steps=3000, batch_size=8, log_every=25, sample_every=1000,
                             optimizer=dict(learning_rate=1e-3, weight_decay=0.0), schedule=dict(warmup_steps=50),
                             checkpoint=dict(every_steps=500), precision=dict(compute_dtype="float32"))
  c.data = ml_collections.ConfigDict(dict(
      seed=0, num_samples=100_000, lexicon_size=24, n_speakers=8, n_test_speakers=2, clauses=(1, 1),
      frame_size=80, face_crop=32, frames=32, text_len=8, pixel_factor=8, mel_mean=-5.0, mel_std=1.75, workers=0,
      video_pca=24, audio_pca=16, pca_fit_samples=200,
      # codecs (unitalking_jax/data.py): "pca" | "wan_vae" (video), "pca" | "mel_vae" (audio); the trained ones
      # are read from these directories (a train_codec workdir, or the codec dir itself).
      # data.video_pca / audio_pca are the latent channel counts either way (checked against the VAEs), and
      # data.pixel_factor the spatial stride; video_codec_chunk: Wan encode chunk in frames (0: whole clip)
      video_codec="pca", audio_codec="pca", video_codec_path="", audio_codec_path="", video_codec_chunk=0,
      # audio_codec="mel_vae" only: "" = Griffin-Lim, or a BigVGAN directory in NVIDIA's layout (config.json +
      # bigvgan_generator.pt; its mel settings must be the codec's) used for decoding and written into releases
      vocoder_path="",
      # reference audio tokens: 0 = a clip's own count (Ta / ref patch); N > 0 = truncated / zero-padded to N
      ref_len=0,
      text="pinyin",  # "pinyin": pinyin syllable ids (model.text_vocab > 0); "umt5": UMT5 features [S, text_dim]
      video_whiten=True,  # per-component PCA scales (unit variance each; False: one global scale, which leaves
      # the mouth's motion ~3 % of the mouth tokens' variance, and T2AV mouths never learnt to move)
      # data.text = "umt5": local dirs of the tokenizer and the transformers UMT5 encoder (text_dim = d_model)
      text_tokenizer="", text_encoder="", text_encoder_dtype="float32",
      # a directory of prepared latents (python -m unitalking_jax.prepare ... --out DIR): training batches come
      # from its ArrayRecord shards through grain, no codec runs in the loop; "" = encode SynthCue on the fly
      latents=""))
  # the model section is UniTalkingConfig's own fields (model.py; defaults live there): UniTalking(
  # from_section(UniTalkingConfig, cfg.model)). Sizes that follow the data or the trainer are references:
  # overriding data.video_pca or trainer.remat changes them too (and setting model.video.in_channels sets
  # data.video_pca: one value).
  d, t = c.data, c.trainer
  c.model = model_section(
      UniTalkingConfig,
      video=dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, ffn_dim=256, num_layers=4,
                 freq_dim=64, text_dim=64, attention_impl="auto", in_channels=d.get_ref("video_pca"),
                 out_channels=d.get_ref("video_pca"), dtype=t.precision.get_ref("compute_dtype"),
                 param_dtype=t.precision.get_ref("param_dtype"), remat_policy=t.get_ref("remat")),
      audio_channels=d.get_ref("audio_pca"), audio_patch=MEL_PER_FRAME, audio_ffn_dim=256,
      ref_dim=d.get_ref("audio_pca") * MEL_PER_FRAME, audio_time_scale=1.0, audio_hw_pos=(0.0, 0.0),
      text_vocab=len(pinyin_vocab()),   # data.text = "pinyin": ids into a learned table; "umt5": 0 (features)
      text_positions=8,  # + a learned position table (syllable order), >= data.text_len
      mask_text=True)  # False: no text mask in the cross-attention (Wan: attends to the zero-padded rows)
  # pretrained weights, named entries (shared/weights/init.py), read on a fresh start only: `video` takes a
  # diffusers WanTransformer3DModel dir or an original Wan dir into the video stream
  # (--config.init.video.path=DIR); init_audio: "random" | "copy_video" (the audio twin copies the video
  # stream's same-shaped modules after the entries are loaded; unitalking_jax/init_from.py)
  # `stage1`: stage 2 from a stage-1 run (audio_pretrain.py): --config.init.stage1.path=STAGE1_WORKDIR (its newest
  # checkpoint's whole param tree; entries apply by name, so a `video` entry given too lands after it)
  c.init = ml_collections.ConfigDict(dict(video=init_entry(rename=WAN_VIDEO_RENAME),
                                          stage1=init_entry(family="workdir")))
  c.init_audio = "random"
  c.objective = ml_collections.ConfigDict(dict(
      # task ratios (one run alternates them per example): T2AV, TV2A, TI2AV, TR2AV
      tasks=ml_collections.ConfigDict(dict(t2av=0.4, tv2a=0.2, ti2av=0.2, tr2av=0.2)),
      timestep_shift=3.0, sampling="uniform", audio_weight=1.0,
      p_independent_sigma=0.3,  # share of examples whose video σ is drawn apart from the audio σ
      p_drop_text=0.1, p_drop_ref=0.1, p_drop_all=0.05))
  c.stage = ml_collections.ConfigDict(dict(
      # 1 = audio-branch TTS pretraining (audio stream alone, every non-audio parameter frozen); 2 = joint
      number=2, trainable=("",)))  # param-path prefixes that train ("" = everything)
  # Task.val_loss_fn (scaling sweeps, eval/val_loss): joint T2AV flow-matching loss on fixed clips, fixed σ grid
  # and noise; split "validation" = unseen clips of the training speakers, "test" = the held-out speakers
  c.validation = ml_collections.ConfigDict(dict(split="validation", clips=32, sigmas=8, seed=0))
  c.sampling = ml_collections.ConfigDict(dict(
      sampler="euler", steps=25, shift=3.0, text_scale=5.0, ref_scale=1.0, num=4, griffin_lim_iters=32,
      score_clips=32))  # sync.txt scores this many held-out clips (16 vary by ~0.1); media for the first `num`
  if arg == "vae_codecs":
    vae_codecs(c)
  return c


def vae_codecs(c, frames: int = 33, side: int = 32, stride: int = 8, video_channels: int = 8,
               audio_channels: int = 20, audio_patch: int = 1):
  """Switches a config to the trained Wan / mel VAE codecs (in place): data.video_codec / audio_codec, the
  clip length (1 + 4 k frames), frame side, stride and latent channels (the model's in/out channels and the
  reference width follow through the config's references), one audio latent per token at RoPE time
  audio_patch / 5 video-latent frames. The codec paths stay for the command line."""
  c.data.update(dict(video_codec="wan_vae", audio_codec="mel_vae", frames=frames, frame_size=side, face_crop=0,
                     pixel_factor=stride, video_pca=video_channels, audio_pca=audio_channels))
  c.model.audio_patch = audio_patch
  c.model.ref_dim = c.data.get_ref("audio_pca") * audio_patch
  c.model.audio_time_scale = audio_patch * (25.0 / 4) / 31.25   # video latent frames per audio token
  return c
