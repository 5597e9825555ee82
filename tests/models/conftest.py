"""Tiny random transformers LLMs saved to disk once per session (shared by the tests in tests/models)."""
from __future__ import annotations

import pytest
import torch

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}

CONFIGS = {
    # GQA (6 query heads over 2 kv heads), llama3 rope scaling, tied embeddings
    "llama_gqa_llama3_tied": ("llama", dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                                            num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True,
                                            rope_scaling=LLAMA3_ROPE, rope_theta=500000.0, rms_norm_eps=1e-5)),
    # qk-norm, untied, head_dim (24) != hidden / heads (10)
    "qwen3_qknorm_untied": ("qwen3", dict(vocab_size=101, hidden_size=40, intermediate_size=72, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                                          tie_word_embeddings=False, rope_theta=1e6)),
    # biases on attention and MLP, multi-query (1 kv head), odd sizes
    "llama_bias_mqa": ("llama", dict(vocab_size=61, hidden_size=36, intermediate_size=52, num_hidden_layers=2,
                                     num_attention_heads=3, num_key_value_heads=1, attention_bias=True, mlp_bias=True,
                                     tie_word_embeddings=False)),
}


def build_hf(name: str, seed: int = 0, **extra):
  from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM
  kind, kw = CONFIGS[name]
  torch.manual_seed(seed)
  if kind == "llama":
    model = LlamaForCausalLM(LlamaConfig(**kw, **extra))
  else:
    model = Qwen3ForCausalLM(Qwen3Config(**kw, **extra))
  with torch.no_grad():  # larger weights than the 0.02 init, so logits are far from uniform
    for p in model.parameters():
      if p.ndim == 2:
        p.normal_(0.0, 0.15)
      else:
        p.uniform_(0.5, 1.5) if torch.all(p == 1) else p.normal_(0.0, 0.1)  # norms around 1, biases
  return model.eval()


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory):
  """{config name: (torch model, saved directory)}."""
  out = {}
  for name in CONFIGS:
    model = build_hf(name)
    d = tmp_path_factory.mktemp(name)
    model.save_pretrained(d)
    out[name] = (model, str(d))
  return out


def export_round_trip(model, tmp_path, derived=("transformers_version",)):
  """A transformers model saved -> shared.weights.load_pretrained -> save_pretrained. Asserts the written
  config.json equals the original except the `derived` keys; returns (module, params, written config dict)."""
  import json

  from shared.weights import load_pretrained, save_pretrained
  model.save_pretrained(tmp_path / "in")
  module, params = load_pretrained(str(tmp_path / "in"))
  save_pretrained(module, params, str(tmp_path / "out"))
  original = json.loads((tmp_path / "in" / "config.json").read_text())
  written = json.loads((tmp_path / "out" / "config.json").read_text())
  assert {k: v for k, v in written.items() if k not in derived} == {
      k: v for k, v in original.items() if k not in derived}
  return module, params, written
