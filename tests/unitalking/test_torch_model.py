"""The PyTorch reference module (diffusers Wan blocks + our joint attention) reproduces the whole UniTalking
forward pass, loaded from an export directory: T2AV with per-token timesteps, TV2A, text ids with padding
masks, reference audio, the audio stream alone."""
from __future__ import annotations

import dataclasses
import json

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch

from shared.models.wan_dit import WanDiTConfig
from unitalking_jax.export import export
from unitalking_jax.model import UniTalking, UniTalkingConfig
from unitalking_jax.torch_model import CONFIG_KEY, UniTalkingTorch, config_to_json

RTOL, ATOL = 1e-4, 1e-5
B, T, HW, CV, TA, CA, S, VOCAB, REF = 2, 3, 4, 4, 8, 6, 5, 11, 5


def _config(text_vocab: int) -> UniTalkingConfig:
  v = WanDiTConfig(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=CV,
                   out_channels=CV, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, attention_impl="xla")
  return UniTalkingConfig(v, audio_channels=CA, audio_patch=2, audio_ffn_dim=24, ref_dim=REF,
                          audio_time_scale=0.5, audio_hw_pos=(1.0, 3.0), text_vocab=text_vocab,
                          text_positions=S + 2 if text_vocab else 0)


def _inputs(seed: int, text_vocab: int):
  r = np.random.default_rng(seed)
  lv = T * (HW // 2) ** 2
  inp = dict(video=r.normal(size=(B, T, HW, HW, CV)).astype(np.float32),
             audio=r.normal(size=(B, TA, CA)).astype(np.float32),
             t_video=r.uniform(0, 1000, (B, lv)).astype(np.float32),   # per-token video timesteps
             t_audio=r.uniform(0, 1000, (B,)).astype(np.float32))
  if text_vocab:
    inp["text"] = r.integers(1, text_vocab, (B, S)).astype(np.int32)
    inp["text"][0, 3:] = 0                                             # padded example
  else:
    inp["text"] = r.normal(size=(B, S, 16)).astype(np.float32)
  inp["text_mask"] = (inp["text"] != 0) if text_vocab else np.arange(S)[None] < np.array([[S], [2]])
  inp["ref"] = r.normal(size=(B, 3, REF)).astype(np.float32)
  return inp


def _build(tmp_path_factory, text_vocab: int, with_json: bool):
  c = _config(text_vocab)
  model = UniTalking(c)
  inp = _inputs(0, text_vocab)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), inp["video"], inp["audio"], inp["t_video"],
                                             inp["t_audio"], inp["text"])["params"])   # jitted: one compile
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda p: np.asarray(p) + 0.1 * rng.standard_normal(p.shape, np.float32), params)
  out = tmp_path_factory.mktemp(f"export_{text_vocab}")
  export(model, params, str(out), {CONFIG_KEY: config_to_json(c)} if with_json else None)
  torch_model = UniTalkingTorch.from_export(str(out), config=None if with_json else c)
  return model, params, torch_model


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
  return _build(tmp_path_factory, 0, with_json=False)


@pytest.fixture(scope="module")
def ids(tmp_path_factory):
  return _build(tmp_path_factory, VOCAB, with_json=True)


_APPLY: dict = {}


def _compare(model, params, torch_model, inp, *, tv2a=False, use_mask=True, use_ref=True, audio_only=False):
  kw = dict(text_mask=inp["text_mask"] if use_mask else None, ref=inp["ref"] if use_ref else None)
  video = None if audio_only else inp["video"]
  key = (id(model), tv2a, audio_only, use_mask, use_ref, video is None)
  if key not in _APPLY:   # one compiled program per variant (eager, every op would compile on its own)
    _APPLY[key] = jax.jit(model.clone(tv2a=tv2a, audio_only=audio_only).apply)
  ov, oa = _APPLY[key]({"params": params}, video, inp["audio"], inp["t_video"], inp["t_audio"], inp["text"], **kw)
  tt = lambda x: None if x is None else torch.from_numpy(np.asarray(x))  # noqa: E731
  with torch.no_grad():
    tv, ta = torch_model(tt(video), tt(inp["audio"]), tt(inp["t_video"]), tt(inp["t_audio"]), tt(inp["text"]),
                         tt(kw["text_mask"]), tt(kw["ref"]), tv2a=tv2a)
  np.testing.assert_allclose(ta.numpy(), np.asarray(oa), rtol=RTOL, atol=ATOL)
  if audio_only:
    assert ov is None and tv is None
  else:
    np.testing.assert_allclose(tv.numpy(), np.asarray(ov), rtol=RTOL, atol=ATOL)
  return tv, ta


def test_t2av_per_token_timesteps(feats):
  tv, ta = _compare(*feats, _inputs(1, 0), use_mask=False, use_ref=False)
  assert float(tv.abs().mean()) > 0.1 and float(ta.abs().mean()) > 0.1


def test_tv2a_mask(feats):
  model, params, tm = feats
  inp = _inputs(2, 0)
  tv, _ = _compare(model, params, tm, inp, tv2a=True)
  other = dict(inp, audio=inp["audio"] + 1.0)      # TV2A: the video stream ignores the audio tokens
  with torch.no_grad():
    tv2, _ = tm(*(torch.from_numpy(other[k]) for k in ("video", "audio", "t_video", "t_audio", "text")),
                torch.from_numpy(other["text_mask"]), torch.from_numpy(other["ref"]), tv2a=True)
    tv3, _ = tm(*(torch.from_numpy(other[k]) for k in ("video", "audio", "t_video", "t_audio", "text")),
                torch.from_numpy(other["text_mask"]), torch.from_numpy(other["ref"]),
                tv2a_flags=torch.tensor([True, True]))
  torch.testing.assert_close(tv2, tv, rtol=0, atol=1e-6)
  torch.testing.assert_close(tv3, tv, rtol=0, atol=1e-6)


def test_text_features_with_mask_and_ref(feats):
  _compare(*feats, _inputs(3, 0))


def test_text_ids_padding_mask_and_reference_audio(ids):
  _compare(*ids, _inputs(4, VOCAB))


def test_audio_only(ids):
  _compare(*ids, _inputs(5, VOCAB), audio_only=True)


def test_config_json_round_trip():
  c = _config(VOCAB)
  from unitalking_jax.torch_model import config_from_json
  assert config_from_json(json.loads(json.dumps(config_to_json(c)))) == c
  assert dataclasses.replace(c, audio_patch=4) != c


def test_config_from_training_config_json(tmp_path):
  """An export whose unitalking_config.json is the training config (what export's main() writes today)."""
  from configs.unitalking.tiny import get_config
  from unitalking_jax.model import model_from_config
  from unitalking_jax.torch_model import CONFIG_FILE, config_from_export
  cfg = get_config()
  (tmp_path / CONFIG_FILE).write_text(cfg.to_json())
  assert config_from_export(str(tmp_path)) == model_from_config(cfg).config


def test_release_module_does_not_import_the_training_task():
  """No import cycles: the PyTorch release module and the init step never pull in the JAX training task."""
  import subprocess
  import sys
  code = ("import sys, unitalking_jax.torch_model, unitalking_jax.init_from, unitalking_jax.model; "
          "bad = [m for m in ('unitalking_jax.task', 'shared.train') if m in sys.modules]; "
          "assert not bad, bad")
  p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
