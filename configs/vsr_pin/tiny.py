"""VALLR-Pin stage I on SynthCue lips, CPU-sized: the dual-decoder model (characters + pinyin).

SynthCue `speech` mode: 28x28 grey mouth ROIs at 25 fps (random 24 crop + time masking in training, centre
24 in eval: auto_avsr's 96 -> 88 geometry scaled down), one clause per utterance (3-4 syllables); the lips
hide 7 consonant groups and each syllable has up to 3 homophone characters that only the sentence decides.
Model: a width-8 ResNet-10 front end (the ResNet-18 layout with one block per stage; swish; the stem's Conv3d
computed as stacked time taps, `frontend.stem="taps"`, because XLA:CPU's Conv3d gradient is ~15x slower), a
128-d SANM encoder (4 blocks, kernel 11), a 2-block causal SANM character decoder, a 2-layer pinyin decoder.
The front end is most of a step's cost on a CPU (every frame runs a 2-D ResNet).
`python -m vsr_pin_jax.train --config configs/vsr_pin/tiny.py --workdir DIR`   (`:char_only` = the baseline)
"""
import ml_collections

from shared.config import model_section, trainer_config
from vsr_pin_jax.model import VallrPinConfig

# The SynthCue world (lexicon, word classes, speakers, sentence grammar) of the tiny configs: the refiner
# (refine_tiny.py) reads the same one, so its language is the lip reader's.
WORLD = dict(seed=0, lexicon_size=24, max_homophones=3, n_speakers=8, n_test_speakers=2, clauses=(1, 1))


def get_config(arg: str = ""):
  c = ml_collections.ConfigDict()
  c.trainer = trainer_config(
      total_steps=3000, batch_size=16, log_every=50, eval_every=500, sample_every=500,
      optimizer=dict(learning_rate=2e-3, weight_decay=0.01), schedule=dict(warmup_steps=200),
      checkpoint=dict(every_steps=500, keep=10), precision=dict(compute_dtype="float32"))
  c.data = ml_collections.ConfigDict(dict(
      source="synthcue", **WORLD, num_samples=100_000, lip_size=28, crop=24, time_mask_stride=25, time_mask_width=5,
      frame_buckets=(32, 48, 64, 96), label_buckets=(4, 8, 12, 16), eval_samples=128,
      # cnvsrc / cmlr: root (the dataset directory), dataset name, char_units.txt path, the mouth-ROI tree (cmlr)
      root="", dataset="cnvsrc", char_units="", video_dir="video", eval_split="test"))
  t = c.trainer
  c.model = model_section(
      VallrPinConfig,
      frontend=dict(block="basic", layers=(1, 1, 1, 1), act="swish", width=8, stem="taps",
                    dtype=t.precision.get_ref("compute_dtype")),
      encoder=dict(input_size=128, output_size=128, attention_heads=4, linear_units=256, num_blocks=4,
                   kernel_size=11, sanm_shfit=0, dtype=t.precision.get_ref("compute_dtype"),
                   remat_policy=t.get_ref("remat")),
      decoder=dict(encoder_output_size=128, attention_heads=4, linear_units=256, num_blocks=2, att_layer_num=2,
                   kernel_size=11, sanm_shfit=None, dtype=t.precision.get_ref("compute_dtype"),
                   remat_policy=t.get_ref("remat")),
      pinyin_decoder=dict(layers=2, heads=4, ffn_dim=256, max_len=32),
      pinyin=True)
  # λ_ctc: the paper does not give it; 0.1 is the CNVSRC 2025 baseline's CTC weight. α = 0.5 (paper).
  c.loss = ml_collections.ConfigDict(dict(ctc_weight=0.1, alpha=0.5, label_smoothing=0.1))
  c.decode = ml_collections.ConfigDict(dict(beam=5, nbest=5, ctc_weight=0.0, length_penalty=0.0))
  c.init = ml_collections.ConfigDict()
  if arg == "char_only":   # the paper's char-only baseline: no pinyin decoder, α = 1
    c.model.pinyin = False
    c.loss.alpha = 1.0
  elif arg:
    raise ValueError(f"configs/vsr_pin/tiny.py: unknown variant {arg!r} (expected '' or 'char_only')")
  return c
