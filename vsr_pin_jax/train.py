"""`python -m vsr_pin_jax.train --config configs/vsr_pin/tiny.py --workdir DIR`   (stage I)

Trains the dual-decoder lip reader (vsr_pin_jax/task.py) with the shared trainer: resumes from
DIR/checkpoints, TensorBoard events + DIR/metrics.jsonl; every trainer.eval_every steps the CER, pinyin
error rate and N-best oracle CER on held-out speakers (metrics "eval/..."), every trainer.sample_every steps
DIR/samples/<step>/transcripts.txt (truth, N-best with scores, pinyin, CTC greedy per utterance).
"""
from __future__ import annotations

from shared import cli
from vsr_pin_jax.evaluate import make_hooks
from vsr_pin_jax.task import make_task


def main():
  cli.train_main(make_task, make_hooks)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
