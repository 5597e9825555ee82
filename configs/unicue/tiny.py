"""UniCUE at tiny size on SynthCue cued speech, CPU-sized: every stage and ablation from one file.

`get_config(arg)`: arg is a comma-separated list of words and key=value pairs
  stage     csr (default: stage 1, CSR = processor + alignment pool + MBart decoder) | vae (the tiny mel VAE) |
            v2s (stage 2, CSV2S: frozen processor + VisioPhonetic adapter + UNet latent diffusion)
  ablation  no_pose (CSR++ / UniCUE++: video stream only) | no_align (no semantic alignment pool: λ = 0) |
            no_adapter (UniCUE*: Z_mv straight into the UNet) | single (single CSV2S: no stage 1; the processor
            trains from scratch in stage 2) | aligned (ours, not the paper's: the adapter output also enters the
            UNet input as 16 frame-aligned channels, model.concat_condition) | lips_only / hand_only (SynthCue
            inputs keep one half of cued speech: data.cues, see unicue_jax/data.py) | oracle (a diagnostic, not
            the paper's: stage 2 conditioned on the true syllable of every frame instead of the processor,
            model.oracle_units; needs no csr= release) | vpred (ours: stage 2 trains on the v target,
            objective.prediction_type) | finetune (ours: the processor starts from the csr= release and trains in
            stage 2, model.freeze_processor=False; the paper's text does not say whether stage 2 freezes it)
  paths     csr=REL (a stage-1 release: python -m unicue_jax.export; fills init.processor and
            init.processor_frontend) and vae=REL (a 'vae' release: fills init.vae)
e.g.  --config configs/unicue/tiny.py                                   (stage 1)
      --config configs/unicue/tiny.py:vae                               (= tiny_vae.py)
      --config configs/unicue/tiny.py:v2s,csr=W/csr_rel,vae=W/vae_rel  (= tiny_v2s.py:csr=...,vae=...)
The init entries can also be set one by one: --config.init.vae.path=W/vae_rel/vae etc.

Data: SynthCue `cued` mode (lexicon of 24 syllables / 54 homophone characters, one clause of 3-4 syllables per
clip, 8 cuers of which 2 are held out for `test`), 64 px frames cropped to the face + cue region and resized to
32 px, pose maps drawn at 64 px and averaged to 32, clips padded to 48 frames (1.92 s; the longest is 44), the
AudioLDM log-mel (192 frames x 64) normalised with AudioLDM's statistics (-4.63, 2.74) for the VAE.
Model: processor = width-8 ResNet-10 per frame (torchvision stem) -> temporal conv k 5 -> 2-layer 64-d
Transformer; MBart 64-d (1 encoder layer = the alignment pool's text encoder, 2 decoder layers, 4 heads);
mel VAE (8, 16, 32) channels, 4 latent channels (latents [48, 16, 4]); UNet (32, 64) channels, attention in the
second level and the mid block, cross_attention_dim 64; adapter d 64 (= 16 x 4, queries from the latent space).
"""
import ml_collections

from shared.config import model_section, trainer_config
from shared.models.autoencoder_kl import audioldm_config
from shared.text.pinyin import load_pinyin_vocab
from shared.weights.init import init_entry
from unicue_jax.model import UniCueConfig

STAGES = ("csr", "vae", "v2s")
ABLATIONS = ("no_pose", "no_align", "no_adapter", "single", "aligned", "lips_only", "hand_only", "oracle", "vpred",
             "finetune")


def parse_arg(arg: str) -> tuple[str, set, dict]:
  words, paths = [], {}
  for item in (a.strip() for a in (arg or "").split(",")):
    if not item:
      continue
    if "=" in item:
      k, v = item.split("=", 1)
      if k not in ("csr", "vae"):
        raise ValueError(f"configs/unicue: unknown path key {k!r} in {arg!r} (expected csr=DIR, vae=DIR)")
      paths[k] = v
    elif item in STAGES + ABLATIONS:
      words.append(item)
    else:
      raise ValueError(f"configs/unicue: unknown word {item!r} in {arg!r} (stages {STAGES}, ablations {ABLATIONS})")
  stages = [w for w in words if w in STAGES] or ["csr"]
  if len(stages) > 1:
    raise ValueError(f"configs/unicue: several stages in {arg!r}")
  return stages[0], {w for w in words if w in ABLATIONS}, paths


def get_config(arg: str = ""):
  stage, ablations, paths = parse_arg(arg)
  c = ml_collections.ConfigDict()
  steps = {"csr": 1500, "vae": 800, "v2s": 1500}[stage]
  c.trainer = trainer_config(
      total_steps=steps, batch_size=8, log_every=25, eval_every=500, sample_every=0,
      optimizer=dict(name="adamw", learning_rate=1e-3, weight_decay=0.01), schedule=dict(warmup_steps=100),
      checkpoint=dict(every_steps=500, keep=4), precision=dict(compute_dtype="float32"))
  c.data = ml_collections.ConfigDict(dict(
      source="synthcue", seed=0, num_samples=100_000, lexicon_size=24, max_homophones=3, n_speakers=8,
      n_test_speakers=2, clauses=(1, 1), frame_size=64, fps=25, tokens="chars", frames=48, image_size=32,
      crop_scale=3.8, pose_supersample=2, label_buckets=(8,), mel_mean=-4.63, mel_std=2.74,
      eval_split="test", eval_samples=64, eval_batch_size=16,
      cues="hand" if "hand_only" in ablations else "lips" if "lips_only" in ablations else "lips+hand",
      # source "cued": root (the dataset directory), dataset name, units file (one token per line)
      root="", dataset="cued", units=""))
  d, t = c.data, c.trainer
  dt = t.precision.get_ref("compute_dtype")
  c.model = model_section(
      UniCueConfig,
      stage=stage,
      processor=dict(frontend=dict(block="basic", layers=(1, 1, 1, 1), act="relu", width=8, stem="conv2d",
                                   in_channels=3, dtype=dt),
                     dim=64, temporal_kernel=5, layers=2, heads=4, ffn_dim=128, max_frames=64,
                     pose="no_pose" not in ablations, dtype=dt, remat_policy=t.get_ref("remat")),
      mbart=dict(d_model=64, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=32,
                 dtype=dt, remat_policy=t.get_ref("remat")),
      adapter=dict(enabled="no_adapter" not in ablations, dim=64, queries=d.get_ref("frames"), heads=4,
                   mlp_ratio=2, query_init="latent_mean"),
      vae=dict(vars(audioldm_config(block_out_channels=(8, 16, 32), layers_per_block=1, latent_channels=4,
                                    norm_num_groups=8, sample_size=64, scaling_factor=1.0))),
      unet=dict(sample_size=None, in_channels=4 + 8 + (16 if "aligned" in ablations else 0), out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(32, 64),
                layers_per_block=1, norm_num_groups=8, attention_head_dim=4,
                cross_attention_dim=64, dtype=dt, remat_policy=t.get_ref("remat")),
      align_weight=0.0 if "no_align" in ablations else 1.0,
      latent_scale=0.0,
      freeze_processor=not {"single", "finetune"} & ablations,
      # the UNet input: 4 latent channels + 8 sinusoids of the latent frame (AudioLDM's UNet has no position code:
      # without them cross-attention could not align syllables with frames, see unicue_jax/model.py)
      time_channels=8, concat_condition=16 if "aligned" in ablations else 0,
      # oracle: 0 = silence, 1 + the pinyin id of the frame's syllable (SynthCue's syllable_ids index pinyin_vocab)
      oracle_units=len(load_pinyin_vocab()) + 1 if "oracle" in ablations else 0)
  if "no_adapter" in ablations:
    c.model.unet.cross_attention_dim = 64      # = processor.dim: Z_mv enters the UNet as it is
  # align: "cosine" = eqs. 5-6 as written: without negatives it collapses (measured, 1500 steps: L_S 0.001, Z_v
  # constant over frames (std 0.03 vs |Z_v| 0.9), the decoder reads nothing from the video: CER 1.02);
  # "contrastive" = the video-text / pose-text contrastive learning the paper's text names (CLIP-style InfoNCE
  # over the batch, model.alignment_loss): the default here
  c.loss = ml_collections.ConfigDict(dict(label_smoothing=0.1, align="contrastive", align_temperature=0.07))
  c.decode = ml_collections.ConfigDict(dict(beam=1, length_penalty=1.0))
  # vae: kl_weight; v2s: the VAE / processor init checks and scale_by_std clips
  # prediction_type: "epsilon" (AudioLDM's, the paper's) | "v_prediction" (ours; word `vpred`): see unicue_jax/task.py
  c.objective = ml_collections.ConfigDict(dict(kl_weight=1e-4, require_vae_init=True, require_processor_init=True,
                                               scale_clips=64,
                                               prediction_type="v_prediction" if "vpred" in ablations else "epsilon"))
  c.sampling = ml_collections.ConfigDict(dict(steps=25, eta=0.0, score_clips=32, template_clips=200))
  c.init = ml_collections.ConfigDict()
  if stage == "vae":
    c.trainer.optimizer.learning_rate = 2e-3
    c.trainer.eval_every = 400
  if stage == "v2s":
    c.init.processor = init_entry(prefix="processor", family="params",
                                  rename=(("temporal", "temporal"), ("encoder", "encoder"), ("fuse", "fuse")))
    c.init.processor_frontend = init_entry(prefix="processor/frontend")
    c.init.vae = init_entry(prefix="vae")
    if "csr" in paths:
      c.init.processor.path = f"{paths['csr'].rstrip('/')}/processor.safetensors"
      c.init.processor_frontend.path = f"{paths['csr'].rstrip('/')}/processor/frontend"
    if "vae" in paths:
      c.init.vae.path = f"{paths['vae'].rstrip('/')}/vae"
    c.trainer.optimizer.learning_rate = 1e-3
    if "single" in ablations or "oracle" in ablations:
      c.objective.require_processor_init = False
  elif paths:
    raise ValueError(f"configs/unicue: csr= / vae= paths are for stage v2s, not {stage!r}")
  return c
