"""VALLR-Pin's refiner (stage 2), CPU-sized: a 4-layer Qwen3-architecture LM over the SynthCue character tokenizer.

  :pretrain  the stand-in for Qwen3's pretraining: SynthCue sentences through the template's answer side
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
data.pretrain_repeat: the share of pretraining examples whose sentence is rendered twice ("正确句子：s 正确句子：s"):
repeated text is where an LM learns to copy in context, which a real pretrained LLM brings to the candidate list
and sentences alone do not teach (below).
The LoRA learning rate here is 2e-3, not the paper's 1e-4 (configs/vsr_pin/refine_qwen3_4b.py): a 0.2M-parameter
model learns in a CPU-sized number of steps only with a larger step.

Measured with these settings (2 shared CPU cores, ~35 min in all; 4000 train / 128 held-out records from
`python -m vsr_pin_jax.refine_data`, CER of nbest[0] 0.140, of the oracle 0.115): pretraining reaches the
language's entropy (held-out 2.96 nats per character; each position draws uniformly from its word class) but the
LoRA refiner does NOT yet beat stage 1 after 1000 steps: CER 0.757 with pretrain_repeat=0.5 (0.954 with
sentence-only pretraining, pretrain_repeat=0); fine-tuning every parameter from the sentence-only base gave 0.351
at 1000 steps, still falling. Longer runs (or a larger model) are needed; learning numbers belong in benchmarks.
"""
import ml_collections

from shared.config import model_section, trainer_config
from shared.errors import ConfigError
from shared.models.llm import LLMConfig
from shared.weights.init import init_entry

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
      seed=0, num_samples=100_000, lexicon_size=44, max_homophones=3, n_speakers=8, n_test_speakers=2,
      clauses=(1, 2), train_records="", eval_records="", max_len=96, nbest=3, eval_sentences=128 if pre else 0,
      pretrain_repeat=0.5, workers=0))
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
