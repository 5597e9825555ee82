"""VALLR-Pin's refiner at paper size: LoRA on Qwen3-4B-Instruct-2507 (SPECS.md § VALLR-Pin), lora stage only.

    python -m vsr_pin_jax.train_refiner --config configs/vsr_pin/refine_qwen3_4b.py --workdir W \\
        --config.model_dir=/path/to/Qwen3-4B-Instruct-2507 \\
        --config.data.train_records=R/train.jsonl --config.data.eval_records=R/eval.jsonl
    python -m vsr_pin_jax.refiner --workdir W --out W/adapter     # PEFT adapter over model_dir

model_dir: the local transformers directory (config.json, safetensors, tokenizer files with the chat template);
both tokenizer.path and init.base.path refer to it (override either alone if they differ). The model section holds
Qwen3-4B-Instruct-2507's sizes; the trainer checks them against model_dir/config.json before any data is read.
Paper: LoRA rank 8, alpha 32, lr 1e-4 (ms-swift); targets: the attention projections.

Measured memory (shared/scaling/aot.py: the real train step compiled by libtpu's XLA:TPU for the slice, abstract
shapes; the checks of make_task satisfied by stand-ins: a saved character tokenizer, a config.json of these sizes,
an empty records file; `python -m shared.scaling compile --config configs/vsr_pin/refine_qwen3_4b.py --topology
v5p-8 --config.tokenizer.path=TOK --config.init.base.path=BASE --config.data.train_records=R --config.trainer.eval_every=0`):
v5p-8 (4 chips, mesh data=4, 4 sequences of 512 per chip, remat full, bf16 compute): 4.03 B parameters (5.9 M LoRA
trainable), TrainState 15.05 GiB per chip (float32 base replicated; Adam on LoRA only), temp 9.85 GiB -> peak
24.90 GiB of 95 GiB: fits. FLOPs: analytic 2.05e14 per step (6 N D = 1.98e14 + attention); XLA (layer scan
counted once) 1.76e13 global vs the analytic count taken the same way 2.43e13 (1.38x: the bf16 configs show
1.38-1.50, the float32 ones 0.93-1.04; not explained).
"""
import ml_collections

from shared.config import model_section, trainer_config
from shared.models.llm import LLMConfig
from shared.weights.init import init_entry


def get_config(arg: str = ""):
  del arg
  c = ml_collections.ConfigDict()
  c.stage = "lora"
  c.task_module = "vsr_pin_jax.refiner"   # shared.scaling (compile / flops): the refiner's make_task, batch_spec
  c.model_dir = ""
  c.trainer = trainer_config(
      total_steps=3000, batch_size=16, log_every=10, eval_every=500,
      optimizer=dict(learning_rate=1e-4, weight_decay=0.0), schedule=dict(warmup_steps=100),
      checkpoint=dict(every_steps=500), precision=dict(compute_dtype="bfloat16"), remat="full")
  c.data = ml_collections.ConfigDict(dict(
      train_records="", eval_records="", max_len=512, nbest=5, eval_sentences=0, workers=0))
  c.tokenizer = ml_collections.ConfigDict(dict(path=c.get_ref("model_dir")))
  t = c.trainer
  c.model = model_section(
      LLMConfig, family="qwen3", qk_norm=True, tie_embeddings=True, vocab_size=151936, hidden_size=2560,
      intermediate_size=9728, num_layers=36, num_heads=32, num_kv_heads=8, head_dim=128, rms_eps=1e-6,
      rope_theta=5_000_000.0, max_position_embeddings=262144, bos_token_id=151643, eos_token_id=(151645,),
      dtype=t.precision.get_ref("compute_dtype"), param_dtype=t.precision.get_ref("param_dtype"),
      remat_policy=t.get_ref("remat"))
  del c.model["lora"]   # the lora section says it
  c.lora = ml_collections.ConfigDict(dict(rank=8, alpha=32.0, dropout=0.0,
                                          targets=("q_proj", "k_proj", "v_proj", "o_proj")))
  c.init = ml_collections.ConfigDict(dict(base=init_entry(path="", allow_missing=True)))
  c.init.base.path = c.get_ref("model_dir")
  c.refine = ml_collections.ConfigDict(dict(method="greedy", num_beams=4, max_new_tokens=64, batch_size=16,
                                            eval_max_records=256))
  return c
