"""Flow matching, DDPM, classifier-free guidance and samplers (Euler, UniPC, DDIM)."""
