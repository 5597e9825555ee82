"""UniTalking learning check on SynthCue: sync of generated clips vs shuffled pairs (and vs real clips).

  python -m unitalking_jax.train --config configs/unitalking/tiny.py --workdir DIR      # ~10-15 min, 2 CPU cores
  python benchmarks/unitalking_learning.py --workdir DIR [--n 16]

Prints one JSON line per task (t2av, ti2av: the model draws both streams; tv2a: audio for a given real video)
with the sync score of unitalking_jax/data.py (corr of per-frame audio log-energy with the mouth-opening proxy;
"sync" matched pairs, "sync_shuffled" (video_i, audio_i+1), "sync_margin" their difference) and the syllable
error rate of the template decoder (unitalking_jax/template_decoder.py: connected-syllable DTW over templates
fitted on real training-speaker clips, never sees the text) on the generated audio against the clip's text
("ser") and against the next clip's text ("ser_chance"), plus both on the real held-out clips (codec round
trip) as the ceiling.
"""
from __future__ import annotations

import json
import sys

from absl import flags

flags.DEFINE_string("workdir", None, "UniTalking training workdir.")
flags.DEFINE_integer("n", 32, "Held-out clips per task.")
flags.DEFINE_integer("seed", 0, "Noise seed.")
flags.DEFINE_float("text_scale", None, "CFG text scale (default: the workdir config's sampling.text_scale).")
FLAGS = flags.FLAGS


def main():
  from shared.checkpoint import restore
  from unitalking_jax.model import model_from_config
  from unitalking_jax.samples import scores
  from unitalking_jax.task import make_task
  r = restore(FLAGS.workdir, model_fn=model_from_config)
  cfg = r.config
  if FLAGS.text_scale is not None:
    cfg.sampling.text_scale = FLAGS.text_scale
  got = scores(cfg, make_task(cfg, r.model).generate, r.params, FLAGS.n, seed=FLAGS.seed)
  common = {"clips": FLAGS.n}
  print(json.dumps({"task": "real", **common, **got.pop("real")}), flush=True)
  for t, m in got.items():
    print(json.dumps({"task": t, **common, "steps": int(cfg.sampling.steps), "seed": FLAGS.seed,
                      "text_scale": float(cfg.sampling.text_scale), "train_step": r.step, **m}), flush=True)


if __name__ == "__main__":
  sys.path.insert(0, ".")
  from shared import cli
  flags.mark_flags_as_required(["workdir"])
  cli.run(main)
