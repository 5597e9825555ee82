"""Stage 1: audio-branch TTS pretraining (SynthCue speech, tiny sizes).

The audio stream runs alone (UniTalking(audio_only=True)) on text -> audio, with reference-audio
conditioning on the tr2av share of examples; every parameter outside the audio stream (video stream,
text table) stays frozen through Task.trainable. The param tree is the full model's, so stage 2 (tiny.py)
can start from this checkpoint's params.
`python -m unitalking_jax.train --config configs/unitalking/audio_pretrain.py --workdir DIR`
"""
from configs.unitalking import tiny


def get_config(arg: str = ""):
  c = tiny.get_config(arg)
  c.stage.number = 1
  c.stage.trainable = ("blocks/audio/", "audio_")
  c.objective.tasks.update(dict(t2av=0.8, tv2a=0.0, ti2av=0.0, tr2av=0.2))
  c.trainer.total_steps = 1000
  c.trainer.sample_every = 0
  return c
