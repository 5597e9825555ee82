"""FlashLips at paper size (SPECS § FlashLips; arXiv 2512.20033). Words as in tiny.py (stage vae | editor | maskfree |
pose, vae=DIR / editor=REL).

  VAE      SDXL's (stabilityai/stable-diffusion-xl-base-1.0/vae: 83.65M, 8x down, 4 latent channels, scaling 0.13025),
           read from a local directory through init.vae: `:editor,vae=SDXL_DIR` reads SDXL_DIR/vae (diffusers
           AutoencoderKL; shared.weights autoencoder_kl family), or --config.init.vae.path=DIR; frozen in every stage
           (the 'vae' stage is for the tiny config: no SD VAE is trained here)
  frames   256 x 256 face crops (the issue's resolution class; the paper's is not public) -> 32 x 32 x 4 latents;
           64 x 64 mouth crops; pose stage: 100-frame windows (4 s at 25 fps)
  editor   not public ("compact U-Net"): our choice, UNet (128, 256, 512), 2 layers per block, DownBlock2D /
           UpBlock2D, self-attending mid block with 8 heads; reference backbone 128 channels, 2 ResNet blocks; in
           4 + 128 + 12 channels, out 4 (the residual to the target latent)
  lips     the mouth-crop CNN (64, 128, 256, 512) -> 8 + 4 (the paper's distilled ResNet-34 encoder is not built)
  pose     Transformer 512-d, 8 layers, 8 heads, over 4 log-mel frames x 64 bins per video frame (the paper's audio
           encoder is not public)
  training AdamW 1e-4, batch 32, bfloat16 compute
Data: SynthCue at 512 px frames, or real talking-face videos (HDTF / CelebV-HQ style): --config.data.source=folder
--config.data.root=DIR, DIR/<split>/<name>.mp4 (25 fps, with audio) + <name>_landmarks.npy (68 points, pixels, from
your own face-landmark detector; flashlips_jax.data.FolderSource).
"""
from configs.flashlips.tiny import LIPS_DIM, add_init_entries, editor_masked, parse_arg
from configs.flashlips.tiny import get_config as tiny_config
from shared.config import model_section
from shared.models.autoencoder_kl import sdxl_config
from flashlips_jax.model import FlashLipsConfig


def get_config(arg: str = ""):
  stage, paths = parse_arg(arg)
  c = tiny_config(arg)
  c.trainer.update(dict(total_steps=200_000, batch_size=32, log_every=100, eval_every=5000, sample_every=0))
  c.trainer.optimizer.update(dict(name="adamw", learning_rate=1e-4))
  c.trainer.schedule.warmup_steps = 1000
  c.trainer.precision.compute_dtype = "bfloat16"
  c.trainer.checkpoint.update(dict(every_steps=5000, keep=5))
  c.data.update(dict(frame_size=512, image_size=256, crop_scale=256 / (0.15 * 512), mouth_size=64, frames=100,
                     eval_samples=64, eval_batch_size=8))
  dt = c.trainer.precision.get_ref("compute_dtype")
  vae = sdxl_config()
  ref_ch = 128
  c.model = model_section(
      FlashLipsConfig,
      stage=stage,
      vae=dict(vars(vae)),
      lips=dict(widths=(64, 128, 256, 512), groups=32, dtype=dt),
      reference=dict(channels=ref_ch, blocks=2, groups=32, dtype=dt),
      unet=dict(sample_size=32, in_channels=vae.latent_channels + ref_ch + LIPS_DIM, out_channels=vae.latent_channels,
                down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                mid_block_type="UNetMidBlock2DCrossAttn", block_out_channels=(128, 256, 512), layers_per_block=2,
                norm_num_groups=32, attention_head_dim=8, cross_attention_dim=512, use_linear_projection=True,
                dtype=dt, remat_policy=c.trainer.get_ref("remat")),
      pose=dict(dim=512, layers=8, heads=8, mlp_ratio=4, audio_dim=4 * 64, max_frames=256, num_styles=1, dtype=dt),
      masked=editor_masked(stage, paths))
  c.model.vae.hf_extra = ()
  c.sampling.update(dict(steps=8, score_clips=64))
  add_init_entries(c, stage, paths)
  return c
