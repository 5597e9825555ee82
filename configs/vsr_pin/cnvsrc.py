"""VALLR-Pin stage I at paper size on the CNVSRC 2025 data layout (CN-CVS / CNVSRC-Multi, auto_avsr manifests).

Front end: 3-D conv stem + ResNet-50 (the paper; `frontend.block="basic", layers=(2, 2, 2, 2)` is the CNVSRC 2025
baseline's ResNet-18), 96x96 mouth ROIs, random 88 crop + time masking in training, centre 88 in eval. Encoder:
FunASR SANM at Paraformer-large width (512-d, 4 heads, FFN 2048, kernel 11); the paper gives neither the encoder
depth nor the decoders' sizes: 12 encoder blocks, a 6-block causal SANM character decoder and a 3-layer pinyin
decoder are this config's choices (say so when comparing). Characters: CNVSRC's char_units.txt (4468 units + our
4 specials); pinyin: the 396 toneless syllables (+ 4 specials; the paper counts 397 units).
  python -m vsr_pin_jax.train --config configs/vsr_pin/cnvsrc.py --workdir W \
      --config.data.root=/data/cnvsrc --config.data.char_units=/data/cnvsrc/char_units.txt
`:cmlr` (or `:cmlr,char_only`): the same model on CMLR (split lists train / val / test.csv; `data.video_dir` = the
tree of 96x96 mouth-ROI crops of CMLR's face videos, made as auto_avsr prepares LRS3; characters from the training
transcripts unless data.char_units names a list):
  python -m vsr_pin_jax.train --config configs/vsr_pin/cnvsrc.py:cmlr --workdir W --config.data.root=/data/CMLR
Weights from an earlier run or a converted checkpoint enter through init entries, e.g. the front end:
  --config.init.frontend.path=DIR   (a conv3d_resnet directory from vsr_pin_jax.export / shared.weights)
"""
import ml_collections

from configs.vsr_pin.tiny import get_config as tiny_config
from shared.config import model_section
from shared.weights.init import init_entry
from vsr_pin_jax.model import VallrPinConfig


VARIANTS = ("char_only", "cmlr")


def get_config(arg: str = ""):
  parts = [p for p in arg.split(",") if p]
  if any(p not in VARIANTS for p in parts):
    raise ValueError(f"configs/vsr_pin/cnvsrc.py: unknown variant {arg!r} (expected a comma list of {VARIANTS})")
  c = tiny_config()
  c.trainer.update(dict(total_steps=150_000, batch_size=64, log_every=100, eval_every=5000, sample_every=5000))
  c.trainer.optimizer.update(dict(learning_rate=1e-3, weight_decay=0.03))
  c.trainer.schedule.warmup_steps = 10_000
  c.trainer.precision.compute_dtype = "bfloat16"
  c.trainer.checkpoint.update(dict(every_steps=5000, keep=20))
  c.data.update(dict(source="cnvsrc", dataset="cnvsrc", root="", char_units="", lip_size=96, crop=88,
                     time_mask_stride=25, time_mask_width=10, eval_split="dev", eval_samples=2000,
                     frame_buckets=(100, 150, 200, 250, 300, 400, 500), label_buckets=(16, 24, 32, 48, 64, 96, 128)))
  t = c.trainer
  c.model = model_section(
      VallrPinConfig,
      frontend=dict(block="bottleneck", layers=(3, 4, 6, 3), act="swish", width=64, stem="conv3d",
                    dtype=t.precision.get_ref("compute_dtype")),
      encoder=dict(input_size=512, output_size=512, attention_heads=4, linear_units=2048, num_blocks=12,
                   kernel_size=11, sanm_shfit=0, dtype=t.precision.get_ref("compute_dtype"),
                   remat_policy=t.get_ref("remat")),
      decoder=dict(encoder_output_size=512, attention_heads=4, linear_units=2048, num_blocks=6, att_layer_num=6,
                   kernel_size=11, sanm_shfit=None, dtype=t.precision.get_ref("compute_dtype"),
                   remat_policy=t.get_ref("remat")),
      pinyin_decoder=dict(layers=3, heads=8, ffn_dim=2048, max_len=160),
      pinyin="char_only" not in parts)
  if "char_only" in parts:
    c.loss.alpha = 1.0
  if "cmlr" in parts:
    c.data.update(dict(source="cmlr", dataset="cmlr", video_dir="video_roi", eval_split="val"))
  c.decode.update(dict(beam=10, nbest=5, ctc_weight=0.3))
  c.init = ml_collections.ConfigDict(dict(frontend=init_entry(prefix="frontend")))
  return c
