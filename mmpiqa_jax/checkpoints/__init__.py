"""Checkpoints in and out: `load_clip` and `read_state_dict` (OpenAI, open_clip and Hugging Face
CLIP files), `save_checkpoint` / `load_checkpoint` (the project's Orbax checkpoint: CLIP, extra
params, extra config), `export_hf` (a Hugging Face folder).
"""
from mmpiqa_jax.checkpoints.errors import CheckpointError
from mmpiqa_jax.checkpoints.export import export_hf
from mmpiqa_jax.checkpoints.formats import read_state_dict
from mmpiqa_jax.checkpoints.load import load_checkpoint, load_clip
from mmpiqa_jax.checkpoints.project import Checkpoint, save_checkpoint

__all__ = ["CheckpointError", "Checkpoint", "read_state_dict", "load_clip", "load_checkpoint",
           "save_checkpoint", "export_hf"]
