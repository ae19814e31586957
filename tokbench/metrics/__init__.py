"""Metrics: every one computed per image on 8-bit images, then aggregated with a 95% CI."""
