"""SynthCue cued-speech recognition from pose with CTC: the trainer's main job on a CPU (minutes)."""
import ml_collections

from shared.config import trainer_config


def get_config(arg: str = ""):
  del arg
  c = ml_collections.ConfigDict()
  c.trainer = trainer_config(
      total_steps=1500, batch_size=16, log_every=50, eval_every=500, sample_every=500,
      optimizer=dict(learning_rate=3e-3), schedule=dict(warmup_steps=100), checkpoint=dict(every_steps=500),
      precision=dict(compute_dtype="float32"))
  c.model = ml_collections.ConfigDict(dict(dim=128, heads=4, layers=3, mlp=256))
  c.data = ml_collections.ConfigDict(dict(
      seed=0, num_samples=100_000, lexicon_size=24, n_speakers=8, n_test_speakers=2, clauses=(1, 1),
      frame_buckets=(48, 64, 96, 128, 192), label_buckets=(4, 8, 16, 32), eval_samples=64))
  return c
