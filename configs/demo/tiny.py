"""Demo: a tiny Transformer learns to sort token sequences (the trainer's smoke job on a CPU)."""
import ml_collections

from shared.config import trainer_config


def get_config(arg: str = ""):
  del arg
  c = ml_collections.ConfigDict()
  c.trainer = trainer_config(
      total_steps=300, batch_size=32, log_every=50, optimizer=dict(learning_rate=3e-3),
      schedule=dict(warmup_steps=30), checkpoint=dict(every_steps=100), precision=dict(compute_dtype="float32"))
  c.model = ml_collections.ConfigDict(dict(vocab=16, length=12, dim=64, heads=4, layers=2, mlp=128))
  c.data = ml_collections.ConfigDict(dict(seed=1, size=100_000))
  c.task_module = "examples.sort"   # the system module for shared.scaling (make_task, scale_config)
  return c
