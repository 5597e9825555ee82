"""The SynthCue TTS stand-in: the template recogniser fitted on real training clips reads its speech of the
held-out cuers' sentences; its timing is its own (not the cuer's); bad input is named."""
import numpy as np
import pytest

from shared.data import audioldm_mel
from shared.data.synthcue import synthcue_source
from shared.data.synthcue_tts import chars_to_syllables, speak
from shared.errors import DataError
from shared.metrics import template_asr

DATA = dict(seed=0, lexicon_size=24, max_homophones=3, n_speakers=8, n_test_speakers=2, clauses=(1, 1),
            frame_size=32, fps=25)


def mel(audio, frames):
  return audioldm_mel.log_mel(audioldm_mel.normalize_wav(audio), target_frames=frames * 4)


def test_tts_speech_is_read_by_templates_fit_on_real_clips():
  train = synthcue_source(DATA, "train", "cued", render_video=False)
  test = synthcue_source(DATA, "test", "cued", render_video=False)
  world = train.world
  clips = [train[i] for i in range(60)]
  templates = template_asr.fit(((mel(s["audio"], len(s["mouth_open"])), s["pinyin"].split(),
                                 np.asarray(s["syllable_frames"]) * 4, int(s["speaker"])) for s in clips),
                               world.syllables)
  samples = [test[i] for i in range(16)]
  refs = [s["pinyin"] for s in samples]
  assert [chars_to_syllables(world, s["text"]) for s in samples] == [r.split() for r in refs]
  spoken = [speak(world, s["speaker"], s["pinyin"].split(), len(s["mouth_open"]), seed=i)
            for i, s in enumerate(samples)]
  assert all(a.shape == s["audio"].shape and a.dtype == np.float32 for a, s in zip(spoken, samples))
  tts = template_asr.score([mel(a, len(s["mouth_open"])) for a, s in zip(spoken, samples)], refs, templates)
  real = template_asr.score([mel(s["audio"], len(s["mouth_open"])) for s in samples], refs, templates)
  assert tts["ser"] < 0.35 and tts["ser"] < tts["ser_chance"] - 0.4, (tts["ser"], tts["ser_chance"], real["ser"])
  # its own timing: the energy follows the cuer's mouth less than the real audio does
  def corr(a, m):
    e = np.log(np.exp(mel(a, len(m)).astype(np.float64)).sum(-1) + 1e-12).reshape(len(m), 4).mean(-1)
    return np.corrcoef(e, m)[0, 1]
  assert np.mean([corr(a, s["mouth_open"]) for a, s in zip(spoken, samples)]) < \
      np.mean([corr(s["audio"], s["mouth_open"]) for s in samples]) - 0.1
  assert not speak(world, 0, [], 30).any()
  with pytest.raises(DataError, match="lexicon"):
    speak(world, 0, ["zzz"], 30)
  with pytest.raises(DataError, match="speaker 99"):
    speak(world, 99, ["a"], 30)


def test_voice_similarity_prefers_the_right_voice():
  """shared.metrics.voice on the TTS stand-in: the cuer's own voice is closer to the cuer's other real clips
  than to the other cuer's, a different voice saying the same sentences is not."""
  from shared.metrics.voice import speaker_similarity
  src = synthcue_source(DATA, "test", "cued", render_video=False)
  samples = [src[i] for i in range(48)]
  real = [mel(s["audio"], len(s["mouth_open"])) for s in samples]
  spk = [s["speaker"] for s in samples]
  own = [mel(speak(src.world, s["speaker"], s["pinyin"].split(), len(s["mouth_open"])), len(s["mouth_open"]))
         for s in samples]
  other = [mel(speak(src.world, (s["speaker"] + 3) % 8, s["pinyin"].split(), len(s["mouth_open"])),
               len(s["mouth_open"])) for s in samples]
  a, b, r = (speaker_similarity(x, real, spk) for x in (own, other, real))
  assert a["spk_sim"] > a["spk_sim_other"] + 0.2 and r["spk_sim"] > r["spk_sim_other"] + 0.2, (a, r)
  assert a["spk_sim"] > b["spk_sim"] + 0.2, (a, b)
