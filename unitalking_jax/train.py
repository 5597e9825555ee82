"""`python -m unitalking_jax.train --config configs/unitalking/tiny.py --workdir DIR`

Trains UniTalking (unitalking_jax/task.py) with the shared trainer: resumes from DIR/checkpoints,
TensorBoard events + DIR/metrics.jsonl, and every trainer.sample_every steps DIR/samples/<step>/ with
T2AV and TV2A clips on held-out speakers (NAME.wav, NAME.mp4 with audio, NAME_frames.png, NAME_mel.png)
and sync.txt (the SynthCue sync score of unitalking_jax/data.py, matched vs shuffled pairs).
"""
from __future__ import annotations

from shared import cli
from unitalking_jax.samples import make_sample_fn
from unitalking_jax.task import make_task


def attach_sample_fn(cfg, task):
  task.sample_fn = make_sample_fn(cfg, task)


def main():
  cli.train_main(make_task, attach_sample_fn)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
