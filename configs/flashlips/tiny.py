"""FlashLips at tiny size on SynthCue speech faces, CPU-sized: every stage from one file.

`get_config(arg)`: arg is a comma-separated list of words and key=value pairs
  stage   vae (the tiny SD-layout image VAE on face crops) | editor (default: stage 1, the masked one-step editor on the
          frozen VAE) | maskfree (the mask-free fine-tune on the editor's pseudo ground truth) | pose (stage 2, the
          audio-to-lips-pose flow-matching Transformer; the editor comes along frozen, for evaluation and inference)
  paths   vae=REL (a 'vae' release: fills init.vae with REL/vae) and editor=REL (an 'editor' or 'maskfree' release:
          fills init.vae with REL/vae and init.editor (+ init.teacher for maskfree) with REL/editor.safetensors)
e.g.  --config configs/flashlips/tiny.py:vae
      --config configs/flashlips/tiny.py:editor,vae=W/vae_rel
      --config configs/flashlips/tiny.py:maskfree,editor=W/editor_rel
      --config configs/flashlips/tiny.py:pose,editor=W/maskfree_rel      (or the masked editor's release)

Data: SynthCue `speech` mode (lexicon 24 syllables, one clause per clip, 36 speakers of which 4 are held out for
`test`: with SynthCue's usual 8 (6 to train on), the tiny VAE fitted the 6 training faces' colours and reconstructed
held-out faces at L1 0.42 vs 0.11 on training faces after 80 steps), 64 px frames, 32 px face crops (3.33 face units), the mouth box from keypoints 4-7 (fixed per clip, margin
0.25, snapped to the VAE's stride 4), 16 px mouth crops (1.4 face units); 2 (target, reference) pairs per clip;
pose stage: the first 48 frames (1.92 s) with the AudioLDM log-mel (4 frames x 64 bins per video frame).
Real videos: --config.data.source=folder --config.data.root=DIR (DIR/train, DIR/test: <name>.mp4 at data.fps with
audio + <name>_landmarks.npy, 68-point landmarks in pixels from your own detector; flashlips_jax.data.FolderSource).
Model: VAE (32, 64, 64) channels, 4 latent channels, stride 4 (latents 8 x 8 x 4); lips encoder (16, 32, 64)
-> 8 + 4; reference backbone 32 channels, 1 block; editor UNet (64, 128), 1 layer per block, self-attending mid
block (in 4 + 32 + 12 = 48, out 4); pose Transformer 128-d, 3 layers, 4 heads.
"""
import ml_collections

from shared.config import model_section, trainer_config
from shared.models.autoencoder_kl import AutoencoderKLConfig
from shared.weights.init import init_entry
from flashlips_jax.model import LIPS_DIM, FlashLipsConfig

STAGES = ("vae", "editor", "maskfree", "pose")
PATHS = ("vae", "editor")
EDITOR_PARTS = (("lips", "lips"), ("reference", "reference"), ("unet", "unet"))
TEACHER_PARTS = (("reference", "teacher_reference"), ("unet", "teacher_unet"))


def parse_arg(arg: str) -> tuple[str, dict]:
  stages, paths = [], {}
  for item in (a.strip() for a in (arg or "").split(",")):
    if not item:
      continue
    if "=" in item:
      k, v = item.split("=", 1)
      if k not in PATHS:
        raise ValueError(f"configs/flashlips: unknown path key {k!r} in {arg!r} (expected vae=DIR, editor=DIR)")
      paths[k] = v.rstrip("/")
    elif item in STAGES:
      stages.append(item)
    else:
      raise ValueError(f"configs/flashlips: unknown word {item!r} in {arg!r} (stages {STAGES})")
  if len(stages) > 1:
    raise ValueError(f"configs/flashlips: several stages in {arg!r}")
  return (stages or ["editor"])[0], paths


def add_init_entries(c, stage: str, paths: dict):
  """init.vae (diffusers AutoencoderKL dir), init.editor / init.teacher (REL/editor.safetensors, our naming)."""
  c.init = ml_collections.ConfigDict()
  if stage == "vae":
    if paths:
      raise ValueError("configs/flashlips: the 'vae' stage takes no paths")
    return
  c.init.vae = init_entry(prefix="vae")
  if stage in ("maskfree", "pose"):
    c.init.editor = init_entry(prefix="", family="params", rename=EDITOR_PARTS)
  if stage == "maskfree":
    # the same file into the frozen teacher; its lips/ tensors are not the teacher's: not strict
    c.init.teacher = init_entry(prefix="", family="params", rename=TEACHER_PARTS, strict=False)
  rel = paths.get("editor") or paths.get("vae")
  if rel:
    c.init.vae.path = f"{rel}/vae"
  if "editor" in paths:
    if stage == "editor":
      raise ValueError("configs/flashlips: editor=REL is for the maskfree / pose stages (editor: vae=REL)")
    c.init.editor.path = f"{paths['editor']}/editor.safetensors"
    if stage == "maskfree":
      c.init.teacher.path = c.init.editor.path


def editor_masked(stage: str, paths: dict) -> bool:
  """model.masked: False for the maskfree stage; for the pose stage the editor release's own flag (REL/release.json),
  so that a pose model trained on the mask-free editor renders with it unmasked; True otherwise."""
  if stage == "maskfree":
    return False
  if stage == "pose" and "editor" in paths:
    import json
    import os
    info = os.path.join(paths["editor"], "release.json")
    if os.path.isfile(info):
      with open(info) as f:
        return bool(json.load(f).get("masked", True))
  return True


def get_config(arg: str = ""):
  stage, paths = parse_arg(arg)
  c = ml_collections.ConfigDict()
  steps = {"vae": 1500, "editor": 3000, "maskfree": 1000, "pose": 2000}[stage]
  c.trainer = trainer_config(
      total_steps=steps, batch_size=16, log_every=50, eval_every=500, sample_every=0 if stage == "vae" else 500,
      optimizer=dict(name="adamw", learning_rate=1e-3, weight_decay=0.01), schedule=dict(warmup_steps=100),
      checkpoint=dict(every_steps=500, keep=3), precision=dict(compute_dtype="float32"))
  c.data = ml_collections.ConfigDict(dict(
      source="synthcue", root="", seed=0, num_samples=100_000, lexicon_size=24, max_homophones=3, n_speakers=36,
      n_test_speakers=4, clauses=(1, 1), frame_size=64, fps=25,
      image_size=32, crop_scale=32 / (0.15 * 64), mouth_scale=1.4, mouth_size=16, mask_margin=0.25,
      pairs_per_clip=2, frames=48, mel_mean=-4.63, mel_std=2.74,
      eval_split="test", eval_samples=32, eval_batch_size=8))
  dt = c.trainer.precision.get_ref("compute_dtype")
  vae = AutoencoderKLConfig(block_out_channels=(32, 64, 64), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                            sample_size=32, scaling_factor=1.0, down_block_types=("DownEncoderBlock2D",) * 3,
                            up_block_types=("UpDecoderBlock2D",) * 3)
  ref_ch = 32
  c.model = model_section(
      FlashLipsConfig,
      stage=stage,
      vae=dict(vars(vae)),
      lips=dict(widths=(16, 32, 64), groups=8, dtype=dt),
      reference=dict(channels=ref_ch, blocks=1, groups=8, dtype=dt),
      unet=dict(sample_size=8, in_channels=vae.latent_channels + ref_ch + LIPS_DIM, out_channels=vae.latent_channels,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                mid_block_type="UNetMidBlock2DCrossAttn", block_out_channels=(64, 128), layers_per_block=1,
                norm_num_groups=8, attention_head_dim=4, cross_attention_dim=128, use_linear_projection=True,
                dtype=dt),
      pose=dict(dim=128, layers=3, heads=4, mlp_ratio=4, audio_dim=4 * 64, max_frames=64, num_styles=1, dtype=dt),
      masked=editor_masked(stage, paths))
  c.model.vae.hf_extra = ()
  c.objective = ml_collections.ConfigDict(dict(
      latent_l1=1.0, latent_l2=1.0, pixel_l1=1.0, lips_gt_weight=0.0, kl_weight=1e-4,
      sigma_sampling="logit_normal", flow_shift=1.0, require_vae_init=True, require_editor_init=True))
  c.sampling = ml_collections.ConfigDict(dict(steps=4, shift=1.0, score_clips=16))
  add_init_entries(c, stage, paths)
  if stage == "vae":
    c.trainer.optimizer.learning_rate = 2e-3
  if stage == "maskfree":
    c.trainer.optimizer.learning_rate = 3e-4
  return c
