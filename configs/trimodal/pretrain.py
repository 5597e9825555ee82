"""Stand-in pretraining of the tri-modal tiny config's encoders and LLM on SynthCue (trimodal_jax/pretrain.py).

The paper's parts arrive pretrained (Video Swin-T on isolated-sign recognition, AV-HuBERT self-supervised on
lips, Whisper supervised ASR, LLaMA-3.2-3B); at CPU size each stand-in gets a short SynthCue pretraining in the
same role, train split only:
  sign    isolated gloss classification: one gloss's frames (its span in a `sign` clip) -> Swin clips of the
          tiny clip_window (TriModal._sign's clamped indices, every data.gloss_clip_stride frames) pooled, mean
          over the gloss -> Linear over the world's glosses (characters)
  lip     VSR-CTC: `speech` mouth crops (random crop + flip) -> AV-HuBERT video path -> Linear -> CTC (chars)
  audio   ASR-CTC: `speech` Whisper log-mels -> Whisper encoder -> Linear -> CTC (chars)
  llm     next-token LM on SynthCue sentences (bos + the sentence's tokens + eos; data.tokenizer), no LoRA
`get_config("sign" | "lip" | "audio" | "llm")`. The model section IS configs/trimodal/tiny.py's (read through its
get_config, so sizes never drift), and so are data and tokenizer (same world, preprocessing and vocabulary).
Export with `python -m trimodal_jax.pretrain_export --workdir W --out DIR`, then
`--config.init.<sign|lip|audio|llm>.path=DIR` on configs/trimodal/tiny.py.
"""
import ml_collections

from configs.trimodal.tiny import get_config as tiny_config
from shared.errors import ConfigError

NAMES = ("sign", "lip", "audio", "llm")
# steps / batch / peak LR per stand-in (CPU budget: each run well under 12 minutes on 2 shared cores)
BUDGET = {"sign": (1000, 8, 2e-3), "lip": (600, 16, 2e-3), "audio": (600, 16, 2e-3), "llm": (600, 16, 3e-3)}

BEST = {"sign": ("acc", "max"), "lip": ("cer", "min"), "audio": ("cer", "min"), "llm": ("ppl", "min")}


def parse_name(arg: str) -> str:
  if arg not in NAMES:
    raise ConfigError(f"configs/trimodal/pretrain.py: unknown stand-in {arg!r} (expected one of {NAMES}, e.g. "
                      "--config configs/trimodal/pretrain.py:sign)")
  return arg


def get_config(arg: str = ""):
  name = parse_name(arg)
  base = tiny_config("stage1")
  steps, batch, lr = BUDGET[name]
  c = ml_collections.ConfigDict()
  c.pretrain = name
  c.trainer = base.trainer          # the same object: tiny's model section refers to its precision / remat
  c.trainer.update(dict(total_steps=steps, batch_size=batch, log_every=25, eval_every=steps, sample_every=0))
  c.trainer.optimizer.update(dict(name="adamw", learning_rate=lr, weight_decay=0.0))
  c.trainer.schedule.update(dict(name="warmup_cosine", warmup_steps=min(50, steps // 10), hold_steps=0,
                                 decay_steps=0, init_ratio=0.0, final_ratio=0.05))
  # DIR/best follows the stand-in's own held-out metric (tiny's "val_token_acc" is the LLM-over-modalities one)
  c.trainer.checkpoint.update(dict(every_steps=steps, keep=1, best=BEST[name][0], best_mode=BEST[name][1]))
  c.data = base.data
  c.data.update(dict(eval_split="test", eval_samples=64))
  # sign: a gloss's frames cut to at most gloss_frames (longer ones centre-cut; shorter ones repeat their last
  # frame, as TriModal._sign clamps); the longest gloss is rate * 1.7 + 4 < 17 frames
  c.data.gloss_frames = 16
  # sign: trained on isolated glosses of sign_pretrain_signers other signers of the same language (the paper's
  # Swin learns isolated signs from another corpus's signers; 0 = the tiny world's own six). Measured on the
  # held-out signers (1000 steps): 32 signers 0.69 gloss accuracy; the tiny world's six 0.07 (at 0.88 training
  # accuracy). Optional augmentations, off: one colour transform per training clip (sign_color_jitter;
  # shared.data.augment.color_jitter: with 32 signers the loss stayed at chance for 600 steps), shifts of up to
  # sign_shift pixels (random_translate: on six signers, at chance after 500 steps)
  c.data.sign_pretrain_signers = 32
  c.data.sign_color_jitter = False
  c.data.sign_shift = 0
  # Swin clips (model.sign.clip_window frames) every gloss_clip_stride frames of a gloss, mean-pooled: the
  # window tiles the gloss (1 = TriModal._sign's clip per frame: 4x the cost on CPU for the same role)
  c.data.gloss_clip_stride = int(base.model.sign.clip_window)
  c.model = base.model
  c.tokenizer = base.tokenizer
  return c
