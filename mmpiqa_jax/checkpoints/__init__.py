"""Checkpoints in and out: OpenAI, open_clip and Hugging Face CLIP files, the project's Orbax
checkpoint, and export to a Hugging Face folder.

    model = load_clip("ViT-B-32.pt")                      # any supported format
    state_dict, fmt = read_state_dict("hf_folder/")       # numpy, OpenAI layout
    save_checkpoint("ckpt/", model, extra_params={...}, extra_config={...})
    model, extras, extra_config = load_checkpoint("ckpt/")
    export_hf(model, "hf_out/", extra_params=extras, extra_config=extra_config)
"""
from mmpiqa_jax.checkpoints.errors import CheckpointError
from mmpiqa_jax.checkpoints.export import export_hf
from mmpiqa_jax.checkpoints.formats import read_state_dict
from mmpiqa_jax.checkpoints.load import load_checkpoint, load_clip
from mmpiqa_jax.checkpoints.project import Checkpoint, save_checkpoint

__all__ = ["CheckpointError", "Checkpoint", "read_state_dict", "load_clip", "load_checkpoint",
           "save_checkpoint", "export_hf"]
