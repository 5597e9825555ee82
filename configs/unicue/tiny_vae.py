"""UniCUE tiny, `vae` (see configs/unicue/tiny.py for what the words mean); further words and paths go after
the colon, e.g. --config configs/unicue/tiny_vae.py:csr=W/csr_rel,vae=W/vae_rel."""
from configs.unicue.tiny import get_config as _tiny


def get_config(arg: str = ""):
  return _tiny("vae" + ("," + arg if arg else ""))
