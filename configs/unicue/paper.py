"""UniCUE at paper size (sec. 4.2; SPECS § UniCUE) on the Chinese cued-speech CSV layout. Words as in tiny.py
(stage csr | vae | v2s, ablations no_pose / no_align / no_adapter / single / finetune / aligned / vpred, csr=REL / vae=REL).

  processor  per-frame ResNet-18 (torchvision layout, relu, 3-channel 256 x 256 frames and pose maps) -> temporal
             conv k 5 -> 6-layer 1024-d Transformer (16 heads, FFN 4096; the paper gives no depth: our choice)
  MBart      MBart-large-50 sizes: d_model 1024, 12 + 12 layers, 16 heads, FFN 4096, 1024 positions, scale_embedding,
             pad 1 / bos 0 / eos 2 / decoder_start 2 (init.mbart: a transformers MBart directory); the vocabulary is
             the data's units (data.units): MBart-50's 250054-piece sentencepiece tokenizer is not wired here, so a
             pretrained MBart-50 needs its own tokenizer before its embedding table fits
  UNet / VAE AudioLDM-s-full: UNet (128, 256, 384, 640), DownBlock2D + 3 CrossAttnDownBlock2D, 2 layers, 8 heads,
             in/out 8, class embedding simple_projection 512 concatenated (fed by the adapter's pooled output);
             cross_attention_dim 128 = the adapter's output (AudioLDM's own attn2 is self-attention: its to_k / to_v
             [C, C] do not fit [C, 128], so init.unet loads with strict=False and those keep their init); mel VAE
             (128, 256, 512), 8 latent channels, raw log-mel (mel_mean 0, std 1: AudioLDM does not normalise)
  adapter    d 128 (= 16 mel bins / 4 x 8 latent channels: queries from the latent space), 256 queries, 8 heads
  data       256 frames at 25 fps (10.24 s; resample 30 fps video to 25: 4 mel frames per video frame), 1024 mel
             frames, 256 x 256 crops; Adam 5e-4, batch 2 (the paper)
`python -m unicue_jax.train --config configs/unicue/paper.py --workdir W --config.data.root=/data/cs
 --config.data.units=/data/cs/units.txt` (stage 1); `:v2s,csr=REL1` plus --config.init.vae.path=AudioLDM/vae and
--config.init.unet.path=AudioLDM/unet (stage 2).
"""

from configs.unicue.tiny import get_config as tiny_config
from configs.unicue.tiny import parse_arg
from shared.config import model_section
from shared.models.autoencoder_kl import audioldm_config
from shared.weights.init import init_entry
from unicue_jax.model import UniCueConfig


def get_config(arg: str = ""):
  stage, ablations, _ = parse_arg(arg)
  c = tiny_config(arg)
  c.trainer.update(dict(total_steps=200_000, batch_size=2, log_every=100, eval_every=5000, sample_every=5000))
  c.trainer.optimizer.update(dict(name="adam", learning_rate=5e-4))
  c.trainer.schedule.warmup_steps = 1000
  c.trainer.precision.compute_dtype = "bfloat16"
  c.trainer.checkpoint.update(dict(every_steps=5000, keep=10))
  c.data.update(dict(source="cued", root="", dataset="cued", units="", fps=25, frames=256, image_size=256,
                     pose_supersample=1, label_buckets=(32, 64, 128), mel_mean=0.0, mel_std=1.0,
                     eval_split="test", eval_samples=500, eval_batch_size=2))
  t, d = c.trainer, c.data
  dt = t.precision.get_ref("compute_dtype")
  c.model = model_section(
      UniCueConfig,
      stage=stage,
      processor=dict(frontend=dict(block="basic", layers=(2, 2, 2, 2), act="relu", width=64, stem="conv2d",
                                   in_channels=3, dtype=dt),
                     dim=1024, temporal_kernel=5, layers=6, heads=16, ffn_dim=4096, max_frames=512,
                     pose="no_pose" not in ablations, dtype=dt, remat_policy=t.get_ref("remat")),
      mbart=dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                 decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                 max_position_embeddings=1024, dtype=dt, remat_policy=t.get_ref("remat")),
      adapter=dict(enabled="no_adapter" not in ablations, dim=128, queries=d.get_ref("frames"), heads=8,
                   mlp_ratio=4, query_init="latent_mean"),
      vae=dict(vars(audioldm_config(scaling_factor=1.0))),
      unet=dict(sample_size=128, in_channels=8 + (16 if "aligned" in ablations else 0), out_channels=8,
                down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
                up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",),
                block_out_channels=(128, 256, 384, 640), layers_per_block=2, attention_head_dim=8,
                cross_attention_dim=1024 if "no_adapter" in ablations else 128,
                class_embed_type="simple_projection", projection_class_embeddings_input_dim=512,
                class_embeddings_concat=True, dtype=dt, remat_policy=t.get_ref("remat")),
      align_weight=0.0 if "no_align" in ablations else 1.0,
      latent_scale=0.0,
      freeze_processor=not {"single", "finetune"} & ablations,
      time_channels=0, concat_condition=16 if "aligned" in ablations else 0)   # AudioLDM's conv_in as released
  c.decode.update(dict(beam=5, length_penalty=1.0))
  c.sampling.update(dict(steps=50, score_clips=64))
  if stage == "csr":
    c.init.mbart = init_entry(prefix="mbart", family="mbart")
  if stage == "v2s":
    c.init.unet = init_entry(prefix="unet", strict=False)
  return c
