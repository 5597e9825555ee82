"""`python -m unicue_jax.train --config configs/unicue/<name>.py[:words] --workdir DIR`

One entry point for the three stages (config `model.stage`; configs/unicue/tiny.py says which words pick which):
  csr  stage 1: the pose-aware visual processor, the semantic alignment pool and the MBart decoder (L_R + L_S);
       every trainer.eval_every steps the CSR error rate on held-out cuers (metrics "eval/..."), every
       trainer.sample_every steps DIR/samples/<step>/transcripts.txt
  vae  the tiny mel VAE (reconstruction + KL); eval: held-out reconstruction error
  v2s  stage 2: the VisioPhonetic adapter + UNet latent diffusion on the frozen processor and VAE (L_G); eval:
       syllable error rate of the generated speech (template recogniser), sync with the real mouth
Resumes from DIR/checkpoints; TensorBoard events + DIR/metrics.jsonl (shared.train).
"""
from __future__ import annotations

from shared import cli
from unicue_jax.evaluate import make_hooks
from unicue_jax.task import make_task


def main():
  cli.train_main(make_task, make_hooks)


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
