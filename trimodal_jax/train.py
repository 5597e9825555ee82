"""`python -m trimodal_jax.train --config configs/trimodal/tiny.py:stage1 --workdir DIR`   (stage1 | stage2)

Trains the tri-modal model (trimodal_jax/task.py) on mixed-task batches with the shared trainer: stage 1 VSR + SLT,
stage 2 all four tasks (cfg.tasks ratios). Resumes from DIR/checkpoints; TensorBoard events + DIR/metrics.jsonl;
every trainer.eval_every steps the held-out token loss (eval/val_loss). (Starting stage 2 from a stage-1 run's
weights is not wired yet: the init entries read pretrained families, not this system's checkpoints.)
"""
from __future__ import annotations

from shared import cli
from trimodal_jax.task import make_task


def main():
  cli.train_main(make_task)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
