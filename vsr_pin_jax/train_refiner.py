"""`python -m vsr_pin_jax.train_refiner --config configs/vsr_pin/refine_tiny.py:pretrain --workdir DIR`

Trains VALLR-Pin's stage-2 refiner (vsr_pin_jax/refiner.py) with the shared trainer: `:pretrain` (the small
Qwen3-architecture LM on SynthCue sentences) or `:lora` (LoRA on error-aware records over a base directory,
configs/vsr_pin/refine_qwen3_4b.py at paper size). Resumes from DIR/checkpoints; TensorBoard events and
DIR/metrics.jsonl (eval/cer_refined next to eval/cer_nbest1 every trainer.eval_every steps). Training only: the
export is `python -m vsr_pin_jax.refiner --workdir DIR --out OUT` (refiner.export_refiner).
"""
from __future__ import annotations

from shared import cli
from vsr_pin_jax.refiner import make_task


def main():
  cli.train_main(make_task)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
