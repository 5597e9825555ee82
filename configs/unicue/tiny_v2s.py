"""UniCUE tiny, `v2s` (see configs/unicue/tiny.py for what the words mean); further words and paths go after
the colon, e.g. --config configs/unicue/tiny_v2s.py:csr=W/csr_rel,vae=W/vae_rel."""
from configs.unicue.tiny import get_config as _tiny


def get_config(arg: str = ""):
  return _tiny("v2s" + ("," + arg if arg else ""))
