"""VALLR-Pin's refiner (stage 2), CPU-sized: a 3-layer Qwen3-architecture LM over the SynthCue character tokenizer.

  :pretrain  the stand-in for Qwen3-Instruct's pretraining: SynthCue sentences through the template's answer side
             and generic correction examples (below)
  :lora      LoRA (r 8, α 32 on q/k/v/o_proj) on error-aware records over the exported pretrain base

    python -m vsr_pin_jax.train_refiner --config configs/vsr_pin/refine_tiny.py:pretrain --workdir W0
    python -m vsr_pin_jax.refiner --workdir W0 --out W0/base                       # transformers Qwen3 directory
    python -m vsr_pin_jax.refine_data --out R                                      # or stage 1's decoded records
    python -m vsr_pin_jax.train_refiner --config configs/vsr_pin/refine_tiny.py:lora --workdir W1 \\
        --config.init.base.path=W0/base --config.data.train_records=R/train.jsonl \\
        --config.data.eval_records=R/eval.jsonl
    python -m vsr_pin_jax.refiner --workdir W1 --out W1/adapter                    # PEFT adapter over W0/base

Fields: stage; data (SynthCue world for the pretrain sentences: seed, lexicon_size, max_homophones, clauses,
num_samples; train_records / eval_records: .jsonl record files (vsr_pin_jax/refine_data.py); max_len: tokens per
example; nbest: hypotheses shown in the prompt; eval_sentences: held-out sentences for the pretrain NLL);
tokenizer.path ("" = the SynthCue character tokenizer); model (shared.models.llm.LLMConfig fields; vocab_size 0 =
the tokenizer's size; LoRA comes from the `lora` section); lora (rank, alpha, dropout, targets); init.base (the base
LLM directory, read on a fresh start; allow_missing: the LoRA leaves are not in it); refine (generation in eval:
method greedy|beam, num_beams, max_new_tokens, batch_size, eval_max_records).
data.pretrain_repeat / data.pretrain_instruct: the shares of pretraining examples whose sentence is rendered twice
("正确句子：s 正确句子：s": repeated text is where an LM learns to copy in context) and that are generic correction
examples (refine_data.synthetic_records: the sentence with random homophone / lip-alike substitutions as pinyin + a
candidate list -> the sentence; synthetic noise, never a lip reader's errors). Together they stand in for what a
pretrained Instruct LLM brings and sentences alone do not teach a 0.2M-parameter model: following the template,
copying from the candidates, fixing homophones from context. The refiner's SynthCue world is the lip reader's
(configs/vsr_pin/tiny.py WORLD). The LoRA learning rate here is 2e-3, not the paper's 1e-4
(configs/vsr_pin/refine_qwen3_4b.py): a 0.2M-parameter model learns in a CPU-sized number of steps only with a
larger step.

Measured (`benchmarks/vsr_pin_table.py`, 2 CPU cores): pretraining, 1,500 steps in ~9 min, reaches the language's
entropy (held-out 2.15 nats per character) and corrects synthetic noise on 128 held-out records (CER of nbest[0]
0.129 -> 0.007 refined): the stand-in reads the template and copies from the list. On a lip reader's own errors it
does not help (README, VALLR-Pin: the stage-I decoders already know SynthCue's language, their residual errors are
visual confusions inside a word class that no sentence context decides).
"""
import ml_collections

from shared.config import model_section, trainer_config
from shared.errors import ConfigError
from shared.models.llm import LLMConfig
from shared.weights.init import init_entry
from configs.vsr_pin.tiny import WORLD

VARIANTS = ("pretrain", "lora")


def get_config(arg: str = ""):
  stage = arg or "pretrain"
  if stage not in VARIANTS:
    raise ConfigError(f"variant {arg!r}: expected one of {VARIANTS}")
  pre = stage == "pretrain"
  c = ml_collections.ConfigDict()
  c.stage = stage
  c.trainer = trainer_config(
      total_steps=1500 if pre else 1000, batch_size=32, log_every=50, eval_every=500,
      optimizer=dict(learning_rate=3e-3 if pre else 2e-3, weight_decay=0.01 if pre else 0.0),
      schedule=dict(warmup_steps=100), checkpoint=dict(every_steps=500), precision=dict(compute_dtype="float32"))
  c.data = ml_collections.ConfigDict(dict(
      **WORLD, num_samples=100_000, train_records="", eval_records="", max_len=96, nbest=3,
      eval_sentences=128 if pre else 0,
      pretrain_repeat=0.25, pretrain_instruct=0.5, workers=0))
  c.tokenizer = ml_collections.ConfigDict(dict(path=""))
  t = c.trainer
  c.model = model_section(
      LLMConfig, family="qwen3", qk_norm=True, tie_embeddings=True, vocab_size=0, hidden_size=64,
      intermediate_size=192, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=16, rms_eps=1e-6,
      rope_theta=10000.0, max_position_embeddings=512, dtype=t.precision.get_ref("compute_dtype"),
      param_dtype=t.precision.get_ref("param_dtype"), remat_policy=t.get_ref("remat"))
  del c.model["lora"]   # the lora section says it (lora stage only)
  c.lora = ml_collections.ConfigDict(dict(rank=8, alpha=32.0, dropout=0.0,
                                          targets=("q_proj", "k_proj", "v_proj", "o_proj")))
  c.init = ml_collections.ConfigDict(dict(base=init_entry(path="", allow_missing=True)))
  c.refine = ml_collections.ConfigDict(dict(method="greedy", num_beams=4, max_new_tokens=16, batch_size=32,
                                            eval_max_records=128))
  return c
