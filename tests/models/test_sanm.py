"""SANM encoder / Paraformer SANM decoder / CTC head vs funasr 1.4 (fp32, 1e-5 relative), both directions:
their random weights -> ours; ours exported -> their load_state_dict(strict=True). Ragged batches, padding
invariance, the causal decoder's incremental step == teacher forcing, greedy / beam search through the search
protocol, FunASR model directories (config.yaml + model.safetensors / model.pt), errors."""
from __future__ import annotations

import importlib.util
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import yaml
from flax import traverse_util

from shared.decoding import search
from shared.errors import CheckpointError, ConfigError
from shared.models.sanm import (CTCHead, SANMDecoder, SANMDecoderConfig, SANMDecoderSearch, SANMEncoder,
                                SANMEncoderConfig)
from shared.weights import sanm_family as fam

RTOL = 1e-5


def _funasr():
  """funasr's SANMEncoder, ParaformerSANMDecoder, CTC. funasr/__init__ imports every model it has (~10 s);
  when it is not imported yet, its submodules are loaded under a bare package object instead, which is then
  dropped so that a later `import funasr` runs the real __init__ (it finds these submodules cached)."""
  stub = "funasr" not in sys.modules
  if stub:
    pkg = types.ModuleType("funasr")
    pkg.__path__ = [os.path.dirname(importlib.util.find_spec("funasr").origin)]
    sys.modules["funasr"] = pkg
  try:
    from funasr.models.ctc.ctc import CTC
    from funasr.models.paraformer.decoder import ParaformerSANMDecoder
    from funasr.models.sanm.encoder import SANMEncoder as TorchEncoder
  finally:
    if stub:
      del sys.modules["funasr"]
  return TorchEncoder, ParaformerSANMDecoder, CTC


# (encoder_conf, decoder_conf or None, vocab); input_size is encoder_conf["input_size"]
MODELS = {
    # Din != D (no attention residual in encoders0), kernel 11; causal decoder (sanm_shfit None, k 5)
    "din10_d12_k11_causal": (dict(input_size=10, output_size=12, attention_heads=3, linear_units=20, num_blocks=3,
                                  input_layer="pe", kernel_size=11, sanm_shfit=0),
                             dict(attention_heads=3, linear_units=14, num_blocks=2, att_layer_num=2, kernel_size=5,
                                  sanm_shfit=None), 13),
    # Din == D, shifted FSMN (k 5, shift 1); decoder with decoders2, even kernel, centred (non-causal)
    "din16_d16_k5_shift_decoders2": (dict(input_size=16, output_size=16, attention_heads=4, linear_units=18,
                                          num_blocks=2, input_layer="pe", kernel_size=5, sanm_shfit=1),
                                     dict(attention_heads=2, linear_units=10, num_blocks=3, att_layer_num=2,
                                          kernel_size=4, sanm_shfit=0), 9),
    # input_layer "linear" (Din == D), a single block (no `encoders` stack), CTC only
    "linear_input_1block": (dict(input_size=8, output_size=8, attention_heads=2, linear_units=12, num_blocks=1,
                                 input_layer="linear", kernel_size=3, sanm_shfit=0), None, 7),
    # input_layer None (identity), odd ffn, k 7
    "no_input_layer": (dict(input_size=6, output_size=6, attention_heads=1, linear_units=11, num_blocks=2,
                            input_layer=None, kernel_size=7, sanm_shfit=0), None, 5),
}
B, T, L = 3, 9, 6
IN_LENS = np.array([9, 5, 7])   # max == T (funasr's masks are as long as the longest)
MEM_LENS = np.array([9, 4, 6])
TGT_LENS = np.array([6, 3, 5])
SOS = 12


class TorchModel(torch.nn.Module):
  """FunASR's model-level layout: encoder. / decoder. / ctc."""

  def __init__(self, encoder, decoder, ctc):
    super().__init__()
    self.encoder, self.decoder, self.ctc = encoder, decoder, ctc


def _build_torch(name, seed=0):
  enc_conf, dec_conf, vocab = MODELS[name]
  TorchEncoder, TorchDecoder, CTC = _funasr()
  torch.manual_seed(seed)
  conf = {k: v for k, v in enc_conf.items() if k != "input_size"}
  enc = TorchEncoder(enc_conf["input_size"], **conf, dropout_rate=0.0, positional_dropout_rate=0.0)
  d = enc_conf["output_size"]
  dec = TorchDecoder(vocab, d, **dec_conf, dropout_rate=0.0) if dec_conf else None
  model = TorchModel(enc, dec, CTC(vocab, d))
  with torch.no_grad():
    for pname, p in model.named_parameters():
      if "norm" in pname and pname.endswith("weight"):
        p.uniform_(0.5, 1.5)
      elif pname.endswith("bias"):
        p.normal_(0.0, 0.1)
      elif "fsmn_block" in pname:
        p.normal_(0.0, 0.3)
  return model.eval()


def _modules(name):
  enc_conf, dec_conf, vocab = MODELS[name]
  enc = SANMEncoder(SANMEncoderConfig(**enc_conf))
  mods = {"encoder": enc}
  if dec_conf:
    mods["decoder"] = SANMDecoder(fam.decoder_config(dec_conf, vocab, enc_conf["output_size"]))
  mods["ctc"] = CTCHead(vocab, enc_conf["output_size"])
  return mods


def _inputs(name, seed=0):
  enc_conf, dec_conf, vocab = MODELS[name]
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((B, T, enc_conf["input_size"])).astype(np.float32)
  mem = rng.standard_normal((B, T, enc_conf["output_size"])).astype(np.float32)
  tok = rng.integers(0, vocab, (B, L)).astype(np.int32)
  return x, mem, tok


def _mask(lens, n):
  return np.arange(n)[None, :] < lens[:, None]


def _torch_outputs(model, x, mem, tok):
  with torch.no_grad():
    h = model.encoder(torch.from_numpy(x), torch.from_numpy(IN_LENS))[0]
    out = {"encoder": h.numpy(), "ctc": model.ctc.log_softmax(h).numpy()}
    if model.decoder is not None:
      emb = model.decoder.embed(torch.from_numpy(tok).long())
      out["decoder"] = model.decoder(torch.from_numpy(mem), torch.from_numpy(MEM_LENS), emb,
                                     torch.from_numpy(TGT_LENS))[0].numpy()
  return out


def _forward_fn(mods):
  def fwd(params, x, in_lens, mem, mem_mask, tok, tgt_mask):
    h = mods["encoder"].apply({"params": params["encoder"]}, x, in_lens)
    out = {"encoder": h, "ctc": mods["ctc"].apply({"params": params["ctc"]}, h)}
    if "decoder" in mods:
      out["decoder"] = mods["decoder"].apply({"params": params["decoder"]}, tok, mem, mem_mask, tgt_mask)
    return out
  return jax.jit(fwd)


@pytest.fixture(scope="module")
def models():
  """{name: (torch model, our modules, params imported from it, jitted forward)}."""
  out = {}
  for name in MODELS:
    model = _build_torch(name)
    mods = _modules(name)
    params = fam.from_torch_state_dict(model.state_dict(), mods)
    out[name] = (model, mods, params, _forward_fn(mods))
  return out


def _random_params(mods, seed=3):
  """Random params of our modules from their abstract shapes (numpy: no eager JAX op per leaf)."""
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape in fam.abstract_params(mods).items():
    if path[-1] == "scale":
      flat[path] = rng.uniform(0.5, 1.5, shape)
    elif path[-1] == "bias":
      flat[path] = rng.normal(0.0, 0.1, shape)
    elif path[-1] == "kernel" and path[-2] in ("fsmn_block", "self_attn"):
      flat[path] = rng.normal(0.0, 0.3, shape)
    else:   # Dense kernels [..., in, out], the embedding table
      flat[path] = rng.normal(0.0, shape[-2] ** -0.5 if path[-1] == "kernel" else 1.0, shape)
  return traverse_util.unflatten_dict({k: v.astype(np.float32) for k, v in flat.items()})


def _ours(fwd, params, x, mem, tok):
  got = fwd(params, x, IN_LENS.astype(np.int32), mem, _mask(MEM_LENS, T), tok, _mask(TGT_LENS, L))
  return {k: np.asarray(v) for k, v in got.items()}


def _assert_close(got, want, what):
  for k in want:
    err = np.abs(got[k] - want[k]).max() / np.abs(want[k]).max()
    assert err < RTOL, f"{what} {k}: relative error {err:.2e}"


@pytest.mark.parametrize("name", list(MODELS))
def test_import_matches_funasr(name, models):
  model, mods, params, fwd = models[name]
  x, mem, tok = _inputs(name)
  _assert_close(_ours(fwd, params, x, mem, tok), _torch_outputs(model, x, mem, tok), f"{name} import")


@pytest.mark.parametrize("name", list(MODELS))
def test_export_loads_strict_into_funasr(name, models):
  _, mods, _, fwd = models[name]
  params = _random_params(mods)
  sd = fam.to_torch_state_dict(params, mods)
  model = _build_torch(name, seed=1)
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
  x, mem, tok = _inputs(name, seed=1)
  _assert_close(_ours(fwd, params, x, mem, tok), _torch_outputs(model, x, mem, tok), f"{name} export")
  back = fam.from_torch_state_dict(model.state_dict(), mods)   # and the round trip is exact
  jax.tree.map(np.testing.assert_array_equal, back, params)


@pytest.mark.parametrize("name", ["din10_d12_k11_causal", "din16_d16_k5_shift_decoders2"])
def test_padding_does_not_leak(name, models):
  _, mods, params, fwd = models[name]
  x, mem, tok = _inputs(name)
  base = _ours(fwd, params, x, mem, tok)
  rng = np.random.default_rng(7)
  x2, mem2, tok2 = x.copy(), mem.copy(), tok.copy()
  x2[~_mask(IN_LENS, T)] = 100 * rng.standard_normal(x2[~_mask(IN_LENS, T)].shape)
  mem2[~_mask(MEM_LENS, T)] = 100 * rng.standard_normal(mem2[~_mask(MEM_LENS, T)].shape)
  tok2[~_mask(TGT_LENS, L)] = rng.integers(0, MODELS[name][2], tok2[~_mask(TGT_LENS, L)].shape)
  got = _ours(fwd, params, x2, mem2, tok2)
  for k, lens, n in (("encoder", IN_LENS, T), ("ctc", IN_LENS, T), ("decoder", TGT_LENS, L)):
    valid = _mask(lens, n)
    np.testing.assert_allclose(got[k][valid], base[k][valid], rtol=1e-5, atol=1e-5, err_msg=k)


def test_causal_config():
  assert SANMDecoderConfig(kernel_size=5, sanm_shfit=None, num_blocks=2, att_layer_num=2).causal
  assert SANMDecoderConfig(kernel_size=11, sanm_shfit=5, num_blocks=2, att_layer_num=2).causal
  assert not SANMDecoderConfig(kernel_size=4, sanm_shfit=None, num_blocks=2, att_layer_num=2).causal  # even k
  assert not SANMDecoderConfig(kernel_size=5, sanm_shfit=None, num_blocks=3, att_layer_num=2).causal  # decoders2
  assert not SANMDecoderConfig(kernel_size=5, sanm_shfit=0).causal
  with pytest.raises(ConfigError, match="sanm_shfit"):
    SANMDecoderConfig(kernel_size=5, sanm_shfit=3)


@pytest.fixture(scope="module")
def causal(models):
  """The causal decoder: (decoder, params, memory, memory_mask, jitted teacher forcing tokens -> logits,
  its search adapter, jitted prefill)."""
  name = "din10_d12_k11_causal"
  _, mods, params, _ = models[name]
  dec, p = mods["decoder"], params["decoder"]
  mem, mmask = jnp.asarray(_inputs(name)[1]), jnp.asarray(_mask(MEM_LENS, T))
  srch = SANMDecoderSearch(dec)
  prefill = jax.jit(lambda p, m, mm: srch.prefill(p, m, mm, sos_id=SOS, max_new_tokens=L))
  return dec, p, mem, mmask, jax.jit(lambda p, t: dec.apply({"params": p}, t, mem, mmask)), srch, prefill


def test_step_equals_teacher_forcing(causal):
  dec, p, mem, mmask, tf, srch, prefill = causal
  tok = np.asarray(_inputs("din10_d12_k11_causal")[2])
  tok[:, 0] = SOS
  want = np.asarray(tf(p, jnp.asarray(tok)))
  logits, cache = prefill(p, mem, mmask)   # = init_cache + step(<sos>)
  np.testing.assert_allclose(np.asarray(logits), want[:, 0], rtol=1e-5, atol=1e-5, err_msg="position 0")
  step = jax.jit(srch.step)
  for i in range(1, L):
    logits, cache = step(p, jnp.asarray(tok[:, i]), cache)
    np.testing.assert_allclose(np.asarray(logits), want[:, i], rtol=1e-5, atol=1e-5, err_msg=f"position {i}")


def test_greedy_and_beam_search(causal):
  dec, p, mem, mmask, tf, srch, prefill = causal
  sos, n = SOS, L
  logits, cache = prefill(p, mem, mmask)
  out = np.asarray(search.greedy(srch, p, logits, cache, max_new_tokens=n))
  prefix = lambda seq: jnp.asarray(np.concatenate([np.full((B, 1), sos, np.int32), seq[:, :-1]], axis=1))
  np.testing.assert_array_equal(np.argmax(np.asarray(tf(p, prefix(out))), -1), out)
  seqs, scores = search.beam_search(srch, p, logits, cache, num_beams=2, max_new_tokens=n, eos_ids=(0,))
  best, scores = np.asarray(seqs)[:, 0], np.asarray(scores)[:, 0]
  lp = np.asarray(jax.nn.log_softmax(tf(p, prefix(best)), -1))   # causal: later tokens do not matter
  for b in range(B):   # the best hypothesis' score is its teacher-forced mean log-prob (up to its eos)
    length = int(np.argmax(best[b] == 0)) + 1 if (best[b] == 0).any() else n
    np.testing.assert_allclose(lp[b, np.arange(length), best[b, :length]].sum() / length, scores[b], rtol=1e-4)


def test_step_needs_causal_decoder(models):
  _, mods, params, _ = models["din16_d16_k5_shift_decoders2"]
  dec = mods["decoder"]
  with pytest.raises(ConfigError, match="causal"):
    dec.apply({"params": params["decoder"]}, jnp.zeros((1, 2, 16)), jnp.ones((1, 2), bool),
              method=SANMDecoder.init_cache)


def test_funasr_directory_round_trip(models, tmp_path):
  name = "din10_d12_k11_causal"
  model, mods, params, fwd = models[name]
  base = {"frontend": None, "tokenizer": "CharTokenizer", "encoder_conf": {"dropout_rate": 0.1}}
  fam.save_funasr(str(tmp_path), mods, params, config=base, write_pt=True)
  cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
  assert cfg["encoder"] == "SANMEncoder" and cfg["decoder"] == "ParaformerSANMDecoder"
  assert cfg["input_size"] == 10 and cfg["vocab_size"] == 13 and cfg["tokenizer"] == "CharTokenizer"
  assert cfg["encoder_conf"]["dropout_rate"] == 0.1 and cfg["decoder_conf"]["sanm_shfit"] is None
  # FunASR builds its modules from these confs and loads model.pt strictly
  TorchEncoder, TorchDecoder, CTC = _funasr()
  tm = TorchModel(TorchEncoder(cfg["input_size"], **cfg["encoder_conf"]),
                  TorchDecoder(cfg["vocab_size"], cfg["encoder_conf"]["output_size"], **cfg["decoder_conf"]),
                  CTC(cfg["vocab_size"], cfg["encoder_conf"]["output_size"], **cfg["ctc_conf"]))
  tm.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)
  for use in ("safetensors", "pt"):
    if use == "pt":
      os.remove(tmp_path / "model.safetensors")
    mods2, params2, cfg2 = fam.load_funasr(str(tmp_path))
    assert {k: m.config if k != "ctc" else m.vocab_size for k, m in mods2.items()} == {
        k: m.config if k != "ctc" else m.vocab_size for k, m in mods.items()}
    jax.tree.map(np.testing.assert_array_equal, params2, jax.tree.map(np.asarray, params))


def test_errors_name_keys_and_shapes(models, tmp_path):
  model, mods, params, _ = models["din10_d12_k11_causal"]
  sd = dict(model.state_dict())
  bad = dict(sd)
  bad["decoder.decoders.1.self_attn.fsmn_block.weight"] = torch.zeros(12, 1, 7)
  with pytest.raises(CheckpointError, match=r"decoders\.1\.self_attn\.fsmn_block\.weight.*\(12, 1, 7\)"):
    fam.from_torch_state_dict(bad, mods)
  missing = {k: v for k, v in sd.items() if k != "encoder.after_norm.bias"}
  with pytest.raises(CheckpointError, match=r"missing keys \['encoder\.after_norm\.bias'\]"):
    fam.from_torch_state_dict(missing, mods)
  fam.from_torch_state_dict({**sd, "predictor.cif_output.weight": torch.zeros(1)}, mods)   # CIF: ignored
  with pytest.raises(CheckpointError, match="config.yaml"):
    fam.load_funasr(str(tmp_path))
  (tmp_path / "config.yaml").write_text("encoder: ConformerEncoder\n")
  torch.save({}, tmp_path / "model.pt")
  with pytest.raises(CheckpointError, match="ConformerEncoder"):
    fam.load_funasr(str(tmp_path))
  with pytest.raises(ConfigError, match="input_layer"):
    SANMEncoderConfig(input_size=10, output_size=12, input_layer="linear")
