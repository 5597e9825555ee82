"""DNSMOS (speechmos ONNX) and speaker similarity (Resemblyzer GE2E) run offline on SynthCue audio."""
import numpy as np
import pytest

from shared.data.synthcue import SynthCue, SynthCueConfig
from shared.metrics import audio


@pytest.fixture(scope="module")
def speech():
  src = SynthCue(SynthCueConfig(mode="speech", render_video=False))
  return [src[i]["audio"] for i in range(2)]


def test_dnsmos_scores_speech_above_noise(speech):
  noise = np.random.default_rng(0).normal(0, 0.3, speech[0].shape).astype(np.float32)
  s, n = audio.dnsmos(speech[0], 16000), audio.dnsmos(noise, 16000)
  assert set(s) == {"ovrl_mos", "sig_mos", "bak_mos", "p808_mos"}
  assert all(1.0 <= v <= 5.0 for v in s.values())
  assert s["ovrl_mos"] > n["ovrl_mos"] + 0.5 and s["sig_mos"] > n["sig_mos"] + 0.5
  # a 48 kHz input is resampled first and scores like its 16 kHz original
  up = audio.dnsmos(np.repeat(speech[0], 3), 48000)
  assert abs(up["ovrl_mos"] - s["ovrl_mos"]) < 0.3


def test_speaker_similarity_identity_and_noise(speech):
  same = audio.speaker_similarity(speech[0], speech[0], 16000)
  noise = np.random.default_rng(1).normal(0, 0.3, speech[0].shape).astype(np.float32)
  assert same > 0.999
  assert audio.speaker_similarity(speech[0], noise, 16000) < same - 0.2
