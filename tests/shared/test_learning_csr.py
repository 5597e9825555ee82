"""The trainer learns a SynthCue task: pose-based cued-speech recognition (CTC) on held-out speakers."""
import json

import jax
import ml_collections
import numpy as np

from configs.demo import csr_tiny
from examples import csr
from shared import mesh as mesh_lib, train as train_lib
from shared.metrics.text import wer


def test_csr_learns_on_synthcue(tmp_path):
  cfg = csr_tiny.get_config()
  cfg.model.update(dict(dim=64, heads=4, layers=2, mlp=128))
  cfg.trainer.update(dict(total_steps=300, log_every=50, eval_every=0, sample_every=300))
  cfg.trainer.checkpoint.every_steps = 0
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1, sequence=1)),
                            devices=jax.devices()[:1])
  task = csr.make_task(cfg)
  result = train_lib.train(cfg, task, str(tmp_path), mesh=mesh)
  losses = [json.loads(l)["loss"] for l in open(tmp_path / "metrics.jsonl")]
  assert losses[-1] < 0.35 * losses[0], losses
  refs, hyps = task.transcribe(result.state.params, "test", 48)
  ser = wer(refs, hyps)
  # chance is ~1.0 (24-syllable lexicon, unknown length); lips or hand alone cannot get below ~0.5
  assert ser < 0.5, (ser, list(zip(refs, hyps))[:4])
  text = (tmp_path / "samples" / "300" / "transcripts.txt").read_text()
  assert text.count("ref: ") == 8
