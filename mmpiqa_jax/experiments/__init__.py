"""Experiments above training: sweeps over a config's grid (prompt depth, length, split seeds)."""
