"""`python -m flashlips_jax.train --config configs/flashlips/<name>.py[:words] --workdir DIR`

One entry point for the four stages (config `model.stage`; configs/flashlips/tiny.py says which words pick which):
  vae       the tiny image VAE on SynthCue face crops; eval: held-out reconstruction L1 / PSNR
  editor    stage 1, the masked one-step editor; eval: reconstruction PSNR (whole crop, inside / outside the mouth
            box) on held-out speakers and the lips-vector probe R² against SynthCue's viseme truth
  maskfree  the mask-free fine-tune on the editor's pseudo ground truth; eval: as editor, with no mask
  pose      stage 2, audio -> lips pose by flow matching; eval: re-synced held-out clips (sync with the new vs the
            original audio, PSNR outside the mouth)
Samples every trainer.sample_every steps in DIR/samples/<step>/ (flashlips_jax/samples.py: edits.png; pose:
re-synced mp4s with the new speech, frame strips, sync.txt). Resumes from DIR/checkpoints; TensorBoard events + DIR/metrics.jsonl (shared.train).
"""
from __future__ import annotations

from shared import cli
from flashlips_jax.samples import make_hooks
from flashlips_jax.task import make_task


def main():
  cli.train_main(make_task, make_hooks)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
