"""Metrics against hand-computed values, PyTorch references and known properties."""
from __future__ import annotations

import math

import numpy as np
import pytest

from shared import metrics
from shared.metrics import sync


def test_wer_hand_computed_corpus_sum():
  refs = ["the cat sat on the mat", "hello world"]
  hyps = ["the cat sit on mat", "hello there world"]
  c = metrics.word_errors(refs, hyps)
  # utt 1: sat->sit (S), 'the' dropped (D); utt 2: 'there' inserted (I); N = 6 + 2.
  assert (c.substitutions, c.deletions, c.insertions, c.n_ref) == (1, 1, 1, 8)
  assert metrics.wer(refs, hyps) == pytest.approx(3 / 8)
  # Empty reference: every hypothesised word is an insertion; empty hypothesis: all deletions.
  assert metrics.word_errors(["a b", ""], ["a b", "x y"]).insertions == 2
  assert metrics.wer(["a b c", "d"], ["", "d"]) == pytest.approx(3 / 4)


def test_cer_and_chinese_cer_hand_computed():
  assert metrics.cer(["abcd"], ["abxd"]) == pytest.approx(1 / 4)
  refs = ["我 爱 北京", "天安门"]
  hyps = ["我爱南京", "天安门广场"]
  # spaces stripped; utt 1: 北->南 (S=1, N=4); utt 2: 广场 inserted (I=2, N=3). Corpus: 3/7,
  # not the per-utterance mean (1/4 + 2/3) / 2.
  c = metrics.char_errors(refs, hyps, strip_spaces=True)
  assert (c.substitutions, c.deletions, c.insertions, c.n_ref) == (1, 0, 2, 7)
  assert metrics.chinese_cer(refs, hyps) == pytest.approx(3 / 7)
  # Without stripping, the spaces in the reference count as characters (and are deleted).
  assert metrics.cer(refs, hyps) > 3 / 7


def test_bleu_hand_computed():
  # All n-gram precisions are 1; only the brevity penalty exp(1 - r/c) acts.
  assert metrics.bleu(["a b c d e f"], ["a b c d"]) == pytest.approx(100 * math.exp(1 - 6 / 4), rel=1e-6)
  assert metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100)
  # 'zh' tokenisation splits CJK characters: 6 of 7 characters, all n-grams match.
  assert metrics.bleu(["我爱北京天安门"], ["我爱北京天安"], tokenize="zh") == pytest.approx(
      100 * math.exp(1 - 7 / 6), rel=1e-6)
  # sacrebleu's default 'exp' smoothing: the k-th order with no match gets precision 1 / (2^k * n).
  # Here p1 = 4/4, p2 = 1/(2*3), p3 = 1/(4*2), p4 = 1/(8*1); no brevity penalty.
  assert metrics.bleu(["a b c d"], ["d c b a"]) == pytest.approx(
      100 * (1 * (1 / 6) * (1 / 8) * (1 / 8)) ** 0.25, rel=1e-6)


def test_rouge_l_character_tokenizer_for_chinese():
  # LCS(我爱北京, 我北京爱) = 我北京 -> P = R = 3/4.
  assert metrics.rouge_l(["我爱北京"], ["我北京爱"], chinese=True) == pytest.approx(0.75)
  # rouge-score's default tokenizer drops non-ASCII, which is why the character tokenizer exists.
  assert metrics.rouge_l(["我爱北京"], ["我北京爱"]) == pytest.approx(0.0)
  # English: LCS(a b c d, a c d e) = a c d -> P = R = 3/4; mean over pairs.
  assert metrics.rouge_l(["a b c d", "x y"], ["a c d e", "x y"]) == pytest.approx((0.75 + 1.0) / 2)


def test_stoi_orders_by_noise_level():
  rng = np.random.default_rng(0)
  sr = 16000
  t = np.arange(sr * 2) / sr
  speech = (np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
            + 0.3 * np.sin(2 * np.pi * 1200 * t) * (np.sin(2 * np.pi * 5 * t) > 0)).astype(np.float32)
  noise = rng.standard_normal(len(t)).astype(np.float32) * np.std(speech)
  clean = metrics.stoi(speech, speech, sr)
  mild = metrics.stoi(speech, speech + 0.3 * noise, sr)
  harsh = metrics.stoi(speech, speech + 3.0 * noise, sr)
  assert clean == pytest.approx(1.0, abs=1e-6)
  assert clean > mild > harsh


def test_optional_extras_raise_naming_the_extra():
  x = np.zeros(16000, np.float32)
  for fn, extra, module in ((lambda: metrics.dnsmos(x, 16000), "dnsmos", "speechmos"),
                            (lambda: metrics.speaker_similarity(x, x, 16000), "speaker", "resemblyzer")):
    try:
      __import__(module)
      installed = True
    except ImportError:
      installed = False
    if installed:  # the real package is present: the metric must return finite numbers.
      out = fn()
      vals = out.values() if isinstance(out, dict) else [out]
      assert all(np.isfinite(v) for v in vals)
    else:
      with pytest.raises(metrics.MissingExtraError, match=rf"\[{extra}\]"):
        fn()


def test_offset_distances_match_torch_pairwise_and_lse_finds_shift():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  t, e, shift = 40, 16, 3
  base = rng.standard_normal((t + 10, e)).astype(np.float32)
  video = base[5:5 + t]
  audio = base[5 - shift:5 - shift + t] + 0.01 * rng.standard_normal((t, e)).astype(np.float32)
  # syncnet_python's calc_pdist, as a loop over frames with torch.
  vs = 15
  a_pad = torch.nn.functional.pad(torch.from_numpy(audio), (0, 0, vs, vs))
  ref = np.stack([torch.nn.functional.pairwise_distance(
      torch.from_numpy(video)[[i]].repeat(2 * vs + 1, 1), a_pad[i:i + 2 * vs + 1]).numpy()
                  for i in range(t)])
  got = sync.offset_distances(video, audio, vs)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  mdist = ref.mean(0)
  out = metrics.lse(video, audio)
  assert out["lse_d"] == pytest.approx(mdist.min(), rel=1e-5)
  assert out["lse_c"] == pytest.approx(np.median(mdist) - mdist.min(), rel=1e-5)
  # audio[t] = video[t - shift]: the best match for video frame t is audio frame t + shift.
  assert mdist.argmin() == vs + shift and out["offset"] == -shift


def _torch_syncnet(torch):
  nn = torch.nn

  def block(conv, bn, pool=None):
    return [conv, bn, nn.ReLU()] + ([pool] if pool is not None else [])

  aud = (block(nn.Conv2d(1, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.MaxPool2d(1, 1))
         + block(nn.Conv2d(64, 192, 3, 1, 1), nn.BatchNorm2d(192), nn.MaxPool2d(3, (1, 2)))
         + block(nn.Conv2d(192, 384, 3, padding=1), nn.BatchNorm2d(384))
         + block(nn.Conv2d(384, 256, 3, padding=1), nn.BatchNorm2d(256))
         + block(nn.Conv2d(256, 256, 3, padding=1), nn.BatchNorm2d(256), nn.MaxPool2d(3, 2))
         + block(nn.Conv2d(256, 512, (5, 4)), nn.BatchNorm2d(512)))
  lip = (block(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2)), nn.BatchNorm3d(96), nn.MaxPool3d((1, 3, 3), (1, 2, 2)))
         + block(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.BatchNorm3d(256),
                 nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
         + block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256))
         + block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256))
         + block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256),
                 nn.MaxPool3d((1, 3, 3), (1, 2, 2)))
         + block(nn.Conv3d(256, 512, (1, 6, 6)), nn.BatchNorm3d(512)))
  fc = lambda: nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 64))  # noqa
  m = nn.Module()
  m.netcnnaud, m.netfcaud, m.netcnnlip, m.netfclip = nn.Sequential(*aud), fc(), nn.Sequential(*lip), fc()
  return m


def test_syncnet_flax_matches_torch_with_converted_weights(tmp_path):
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  m = _torch_syncnet(torch)
  with torch.no_grad():  # non-trivial BN statistics so the conversion of running stats is exercised
    for mod in m.modules():
      if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
        mod.running_mean.uniform_(-0.2, 0.2)
        mod.running_var.uniform_(0.5, 2.0)
        mod.weight.uniform_(0.5, 1.5)
        mod.bias.uniform_(-0.1, 0.1)
  m.eval()
  rng = np.random.default_rng(0)
  mfcc = rng.standard_normal((2, 13, 20)).astype(np.float32)
  lips = rng.uniform(0, 255, (1, 5, 224, 224, 3)).astype(np.float32)
  with torch.no_grad():
    a = torch.from_numpy(mfcc)[:, None]
    ref_a = m.netfcaud(m.netcnnaud(a).flatten(1)).numpy()
    v = torch.from_numpy(lips).permute(0, 4, 1, 2, 3)
    ref_v = m.netfclip(m.netcnnlip(v).flatten(1)).numpy()
  variables = sync.convert_torch_state_dict({k: v.numpy() for k, v in m.state_dict().items()
                                             if v.dtype != torch.int64})
  model = sync.SyncNet(embed_dim=64)
  import jax
  got_a, got_v = jax.jit(model.apply)(variables, mfcc, lips)  # one compile, not op by op
  np.testing.assert_allclose(np.asarray(got_a), ref_a, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(got_v), ref_v, rtol=1e-4, atol=1e-4 * np.abs(ref_v).max())
  # Loading from a local file: the original format (a torch state dict) and safetensors agree.
  from safetensors.numpy import save_file
  from shared.errors import CheckpointError
  sd = {k: v for k, v in m.state_dict().items() if v.dtype != torch.int64}
  torch.save(sd, tmp_path / "syncnet_v2.model")
  save_file({k: v.numpy() for k, v in sd.items()}, str(tmp_path / "syncnet.safetensors"))
  for name in ("syncnet_v2.model", "syncnet.safetensors"):
    loaded_model, loaded = sync.load_syncnet(tmp_path / name)
    assert loaded_model.embed_dim == 64
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  back = sync.to_torch_state_dict(variables)                 # the other direction: syncnet_python's names
  assert set(back) == set(sd)
  for k, v in sd.items():
    np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)
  with pytest.raises(CheckpointError, match="netfclip.3.bias"):
    sync.convert_torch_state_dict({k: v for k, v in sd.items() if k != "netfclip.3.bias"})
  # Windows as syncnet_python cuts them: W = min(T, S // 640) - 5, 4 MFCC steps per frame.
  frames = rng.integers(0, 255, (12, 224, 224, 3), dtype=np.uint8)
  lw, aw = sync.syncnet_windows(frames, rng.standard_normal(16000 * 12 // 25).astype(np.float32) * 0.1)
  assert lw.shape == (7, 5, 224, 224, 3) and aw.shape == (7, 13, 20)
  np.testing.assert_array_equal(lw[2, 0], frames[2, ..., ::-1])
  # a clip's LSE through SyncScorer == the windows embedded by the model + lse()
  audio = rng.standard_normal(16000 * 12 // 25).astype(np.float32) * 0.1
  scorer = sync.SyncScorer(tmp_path / "syncnet.safetensors", batch=4)
  got = scorer(frames, audio)
  va, vv = jax.jit(model.apply)(variables, aw, lw)
  want = sync.lse(np.asarray(vv), np.asarray(va), 15)
  for k in ("lse_c", "lse_d"):
    assert got[k] == pytest.approx(want[k], rel=1e-4), k
  assert got["offset"] == want["offset"]
  small = scorer(frames[:, ::4, ::4], audio)                 # 56 px crops are resized to 224
  assert np.isfinite(small["lse_d"])
  with pytest.raises(ValueError, match="more than 5 frames"):
    scorer(frames[:5], audio)


def test_mfcc_matches_python_speech_features():
  psf = pytest.importorskip("python_speech_features")  # [test] extra; the oracle syncnet_python uses
  rng = np.random.default_rng(0)
  pcm = (rng.standard_normal(8000) * 3000).astype(np.int16)  # syncnet_python feeds int16 samples
  ref = psf.mfcc(pcm, 16000)
  got = sync.mfcc(pcm.astype(np.float32) / 32768.0, 16000)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
