"""Stage 1: audio-branch TTS pretraining (SynthCue speech, tiny sizes).

The audio stream runs alone (UniTalking(audio_only=True)) on text -> audio, with reference-audio
conditioning on the tr2av share of examples; every parameter outside the audio stream (video stream,
text table) stays frozen through Task.trainable. The param tree is the full model's, so stage 2 (tiny.py)
can start from this checkpoint's params.
`python -m unitalking_jax.train --config configs/unitalking/audio_pretrain.py --workdir DIR`, then stage 2:
`python -m unitalking_jax.train --config configs/unitalking/tiny.py --config.init.stage1.path=DIR --workdir DIR2`
(the newest stage-1 checkpoint's params, the whole tree, on the fresh start; shared/weights/init.py "workdir").
At paper size: configs/unitalking/wan22_5b.py:stage1.
"""
from configs.unitalking import tiny


def get_config(arg: str = ""):
  c = audio_stage(tiny.get_config(arg))
  c.trainer.total_steps = 1000
  return c


def audio_stage(c):
  """Any UniTalking config -> its stage 1 (the audio stream alone on TTS, with and without a reference voice;
  everything else frozen). Stage 2 then starts from it: --config.init.stage1.path=STAGE1_WORKDIR."""
  c.stage.number = 1
  c.stage.trainable = ("blocks/audio/", "audio_")
  c.objective.tasks.update(dict(t2av=0.8, tv2a=0.0, ti2av=0.0, tr2av=0.2))
  c.trainer.sample_every = 0
  return c
