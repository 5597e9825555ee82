"""shared.metrics.bleurt: a BLEURT-PyTorch-layout checkpoint written here (random weights) scores as transformers'
BertForSequenceClassification (embedding = hidden) and RemBertForSequenceClassification (projected embeddings,
BLEURT-20's layout) with the same weights, on padded batches; .bin and .safetensors read alike; bad checkpoints
named."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shared.errors import CheckpointError, ConfigError  # noqa: E402
from shared.metrics.bleurt import BleurtScorer  # noqa: E402
from shared.torch_compat import import_torchvision  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz") + \
    ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + ["the", "cat", "sat", "on", "mat"]
REFS = ["the cat sat on the mat", "a cat", "the mat", "xyz"]
HYPS = ["the cat sat", "a cat sat on the mat today", "the mat", "abc def"]


def _oracle(projected: bool):
  import_torchvision()
  import transformers as tf
  torch.manual_seed(0)
  common = dict(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=32, max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu",
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=1, pad_token_id=0)
  if projected:
    m = tf.RemBertForSequenceClassification(tf.RemBertConfig(input_embedding_size=8, output_embedding_size=8,
                                                             classifier_dropout_prob=0.0, **common))
    rename = [("rembert.", "bleurt."), ("encoder.embedding_hidden_mapping_in", "encoder.embedding_projection")]
  else:
    m = tf.BertForSequenceClassification(tf.BertConfig(**common))
    rename = [("bert.", "bleurt.")]
  m.eval()
  with torch.no_grad():             # non-trivial LayerNorm and biases
    for name, p in m.named_parameters():
      if "LayerNorm" in name or name.endswith("bias"):
        p.add_(0.1 * torch.randn_like(p))
  sd = {}
  for k, v in m.state_dict().items():
    if "position_ids" in k or "token_type_ids" in k:
      continue
    for a, b in rename:
      k = k.replace(a, b)
    sd[k] = v.contiguous()
  cfg = dict(common, model_type="bleurt", layer_norm_eps=1e-12)
  if projected:
    cfg["embedding_size"] = 8
  return m, sd, cfg


def _write(d, sd, cfg, fmt):
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "config.json"), "w") as f:
    json.dump(cfg, f)
  with open(os.path.join(d, "vocab.txt"), "w") as f:
    f.write("\n".join(VOCAB) + "\n")
  if fmt == "bin":
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))
  else:
    from safetensors.torch import save_file
    save_file(sd, os.path.join(d, "model.safetensors"))
  return d


@pytest.mark.parametrize("projected,fmt", [(False, "safetensors"), (True, "bin")])
def test_scores_equal_the_transformers_models(tmp_path, projected, fmt):
  from transformers import BertTokenizer
  m, sd, cfg = _oracle(projected)
  scorer = BleurtScorer(_write(str(tmp_path / "ck"), sd, cfg, fmt), batch_size=3)     # 2 batches, padded
  got = scorer(REFS, HYPS)
  tok = BertTokenizer(str(tmp_path / "ck" / "vocab.txt"))
  x = tok(REFS, HYPS, padding="longest", return_tensors="pt")
  assert (x["attention_mask"] == 0).any() and (x["token_type_ids"] == 1).any()
  with torch.no_grad():
    want = m(**x).logits[:, 0].numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  alone = np.array([scorer([r], [h])[0] for r, h in zip(REFS, HYPS)])                 # padding changes nothing
  np.testing.assert_allclose(alone, got, rtol=1e-5, atol=1e-5)
  assert scorer(REFS[:1], REFS[:1]).shape == (1,) and scorer([], []).shape == (0,)
  assert scorer._forward._cache_size() == 1          # every length up to 32 tokens, any batch: one program


def test_bad_checkpoints_are_named(tmp_path):
  with pytest.raises(ConfigError, match="no config.json"):
    BleurtScorer(str(tmp_path))
  _, sd, cfg = _oracle(False)
  d = _write(str(tmp_path / "ck"), {k: v for k, v in sd.items() if "pooler" not in k}, cfg, "safetensors")
  with pytest.raises(CheckpointError, match="pooler.dense.weight"):
    BleurtScorer(d)
  os.remove(os.path.join(d, "model.safetensors"))
  with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
    BleurtScorer(d)
  with pytest.raises(ConfigError, match="references"):
    BleurtScorer(_write(str(tmp_path / "ok"), sd, cfg, "safetensors"))(["a"], [])
