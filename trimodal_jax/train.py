"""`python -m trimodal_jax.train --config configs/trimodal/tiny.py:stage1 --workdir DIR`   (stage1 | stage2)

Trains the tri-modal model (trimodal_jax/task.py) on mixed-task batches with the shared trainer: stage 1 VSR + SLT,
stage 2 all four tasks (cfg.tasks ratios). Resumes from DIR/checkpoints; TensorBoard events + DIR/metrics.jsonl;
every trainer.eval_every steps the held-out token loss (eval/val_loss) and the decoded held-out metrics of the
stage's tasks (trimodal_jax/evaluate.make_hooks: data.eval_samples clips split between them; sample_every:
transcripts). Stage 2 starts from a stage-1 run with --config.init.stage1.path=STAGE1_WORKDIR.
"""
from __future__ import annotations

from shared import cli
from trimodal_jax.evaluate import make_hooks
from trimodal_jax.task import make_task


def main():
  cli.train_main(make_task, make_hooks)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
