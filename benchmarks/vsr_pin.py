"""VALLR-Pin speed, same CPU, same run: (1) a stage-I train step, forward+backward of the lip front end (3-D stem +
ResNet trunk, BatchNorm in training mode) -> projection -> SANM encoder -> SANM decoder + CTC head, ours (JAX,
jitted) vs FunASR's modules + a PyTorch twin of the front end in the CNVSRC layout (tests/models/
test_resnet_frontend.py) with the same shapes; (2) beam-5 N-best decoding (joint attention + CTC) clips/s of ours.

  python benchmarks/vsr_pin.py [--dim 256 --blocks 6 --dec-blocks 3 --batch 8 --frames 75 --labels 20 --steps 5]
      [--frontend tiny|resnet18|none --hw 24]
--frontend: `tiny` = configs/vsr_pin/tiny.py's (width 8, one block per stage; ours with its "taps" stem),
`resnet18` = the CNVSRC 2025 baseline's (width 64, (2, 2, 2, 2); ours "taps"), `none` = features in, SANM only.
Prints JSON lines: one per measurement and a summary with "ratio" = ours / PyTorch (below 1: ours is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--dim", type=int, default=256)
  ap.add_argument("--blocks", type=int, default=6)
  ap.add_argument("--dec-blocks", type=int, default=3)
  ap.add_argument("--vocab", type=int, default=500)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--frames", type=int, default=75)
  ap.add_argument("--labels", type=int, default=20)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--beam", type=int, default=5)
  ap.add_argument("--frontend", default="tiny", choices=("tiny", "resnet18", "none"))
  ap.add_argument("--hw", type=int, default=24, help="mouth crop side (88 at paper size)")
  args = ap.parse_args()

  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from funasr.models.ctc.ctc import CTC
  from funasr.models.paraformer.decoder import ParaformerSANMDecoder
  from funasr.models.sanm.encoder import SANMEncoder as TorchEncoder

  from shared.decoding.search import joint_ctc_beam_search
  from shared.models.sanm import CTCHead, SANMDecoder, SANMDecoderConfig, SANMDecoderSearch, SANMEncoder
  from shared.models.sanm import SANMEncoderConfig
  from shared.weights.sanm_family import from_torch_state_dict

  torch.manual_seed(0)
  d, b, t, l, v = args.dim, args.batch, args.frames, args.labels, args.vocab
  kw = dict(attention_heads=4, linear_units=4 * d)
  enc_t = TorchEncoder(input_size=d, output_size=d, num_blocks=args.blocks, kernel_size=11, input_layer="pe",
                       dropout_rate=0.0, attention_dropout_rate=0.0, positional_dropout_rate=0.0, **kw)
  dec_t = ParaformerSANMDecoder(v, d, num_blocks=args.dec_blocks, att_layer_num=args.dec_blocks, kernel_size=11,
                                sanm_shfit=None, dropout_rate=0.0, self_attention_dropout_rate=0.0,
                                src_attention_dropout_rate=0.0, **kw)
  ctc_t = CTC(v, d)
  torch_mods = torch.nn.ModuleDict({"encoder": enc_t, "decoder": dec_t, "ctc": ctc_t}).train()
  embed_t = torch.nn.Embedding(v, d)
  rng = np.random.default_rng(0)
  fcfg = None
  if args.frontend != "none":
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from shared.nn.resnet import Conv3dResNet, ResNetConfig
    from tests.models.test_resnet_frontend import TorchConv3dResNet
    width, layers = (8, (1, 1, 1, 1)) if args.frontend == "tiny" else (64, (2, 2, 2, 2))
    fcfg = ResNetConfig(block="basic", layers=layers, act="swish", width=width, stem="taps")
    front_t = TorchConv3dResNet(fcfg).train()
    proj_t = torch.nn.Linear(fcfg.out_features, d)
    front_params = list(front_t.parameters()) + list(proj_t.parameters())
    frames = rng.normal(size=(b, t, args.hw, args.hw)).astype(np.float32)
  x = rng.normal(size=(b, t, d)).astype(np.float32)
  xl = np.full((b,), t, np.int64)
  ys = rng.integers(3, v, (b, l))
  yl = np.full((b,), l, np.int64)

  def torch_step():
    torch_mods.zero_grad(set_to_none=True)
    feats = torch.from_numpy(x)
    if fcfg is not None:
      for q in front_params:
        q.grad = None
      feats = proj_t(front_t(torch.from_numpy(frames)[:, :, None]))
    h, hl, _ = enc_t(feats, torch.from_numpy(xl))
    logits, _ = dec_t(h, hl, embed_t(torch.from_numpy(ys)), torch.from_numpy(yl))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, v), torch.from_numpy(ys).reshape(-1))
    loss = loss + ctc_t(h, hl, torch.from_numpy(ys), torch.from_numpy(yl))
    loss.backward()
    return loss.item()

  torch_step()
  t0 = time.perf_counter()
  for _ in range(args.steps):
    torch_step()
  torch_ms = (time.perf_counter() - t0) / args.steps * 1e3

  enc = SANMEncoder(SANMEncoderConfig(input_size=d, output_size=d, num_blocks=args.blocks, kernel_size=11, **kw))
  dec = SANMDecoder(SANMDecoderConfig(vocab_size=v, encoder_output_size=d, num_blocks=args.dec_blocks,
                                      att_layer_num=args.dec_blocks, kernel_size=11, sanm_shfit=None, **kw))
  ctc = CTCHead(v, d)
  mods = {"encoder": enc, "decoder": dec, "ctc": ctc}
  sd = {f"{k}.{n}": p.detach().numpy() for k, m in torch_mods.items() for n, p in m.state_dict().items()}
  sd["decoder.embed.0.weight"] = embed_t.weight.detach().numpy()
  params = from_torch_state_dict(sd, mods)
  xj, xlj, ysj = jnp.asarray(x), jnp.asarray(xl, jnp.int32), jnp.asarray(ys, jnp.int32)
  front_state = {}
  if fcfg is not None:
    import flax.linen as nn
    front, proj = Conv3dResNet(fcfg), nn.Dense(d)
    fj = jnp.asarray(frames)
    fv = front.init(jax.random.PRNGKey(0), fj[:1, :6])
    params["front"], front_state = fv["params"], {k: v for k, v in fv.items() if k != "params"}
    params["proj"] = proj.init(jax.random.PRNGKey(1), jnp.zeros((1, fcfg.out_features)))["params"]

  def features(p):
    if fcfg is None:
      return xj
    y, _ = front.apply({"params": p["front"], **front_state}, fj, train=True, mutable=["batch_stats"])
    return proj.apply({"params": p["proj"]}, y)

  def loss_fn(p):
    h = enc.apply({"params": p["encoder"]}, features(p), xlj)
    mask = jnp.ones((b, t), bool)
    logits = dec.apply({"params": p["decoder"]}, ysj, h, mask)
    ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), ysj[..., None], -1))
    import optax
    c = optax.ctc_loss(ctc.apply({"params": p["ctc"]}, h), jnp.zeros((b, t)), ysj, jnp.zeros((b, l)))
    return ce + jnp.mean(c)

  step = jax.jit(jax.value_and_grad(loss_fn))
  jax.block_until_ready(step(params))
  t0 = time.perf_counter()
  for _ in range(args.steps):
    jax.block_until_ready(step(params))
  ours_ms = (time.perf_counter() - t0) / args.steps * 1e3
  common = dict(dim=d, blocks=args.blocks, dec_blocks=args.dec_blocks, batch=b, frames=t, labels=l, vocab=v,
                frontend=args.frontend, hw=args.hw if fcfg is not None else None)
  print(json.dumps({"bench": "stage1_train_step", "impl": "funasr_torch", "ms_per_step": round(torch_ms, 2),
                    **common}), flush=True)
  print(json.dumps({"bench": "stage1_train_step", "impl": "ours_jax", "ms_per_step": round(ours_ms, 2), **common}),
        flush=True)

  search = SANMDecoderSearch(dec)

  @jax.jit
  def decode(p):
    h = enc.apply({"params": p["encoder"]}, xj, xlj)   # (features in: decoding speed of the SANM part)
    mask = jnp.ones((b, t), bool)
    logp = ctc.apply({"params": p["ctc"]}, h)
    logits, cache = search.prefill(p["decoder"], h, mask, sos_id=1)
    return joint_ctc_beam_search(search, p["decoder"], logits, cache, logp, xlj, ctc_weight=0.3,
                                 num_beams=args.beam, max_new_tokens=l, eos_id=2, pre_beam=int(1.5 * args.beam))

  jax.block_until_ready(decode(params))
  t0 = time.perf_counter()
  for _ in range(args.steps):
    jax.block_until_ready(decode(params))
  dec_s = (time.perf_counter() - t0) / args.steps
  print(json.dumps({"bench": "nbest_decode", "impl": "ours_jax", "beam": args.beam, "clips_per_s":
                    round(b / dec_s, 2), "ctc_weight": 0.3, **common}), flush=True)
  print(json.dumps({"bench": "stage1_train_step", "summary": True, "frontend": args.frontend,
                    "ratio": round(ours_ms / torch_ms, 3)}), flush=True)


if __name__ == "__main__":
  main()
