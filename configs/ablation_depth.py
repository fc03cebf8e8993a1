"""The prompt-depth ablation: MP-IQE with visual prompts in the first 0, 3, 6, 9 and 12 layers.

`mmpiqa sweep --config configs/ablation_depth.py --workdir DIR` runs one training per value of
the grid in `config.sweep` (same arguments as `configs/mpiqe.py`, minus depth).
"""
from mmpiqa_jax import config as config_lib

mpiqe = config_lib.load_sibling(__file__, "mpiqe")


def get_config(arg=None):
    config = mpiqe.get_config(arg)
    # Mirrors the config's structure; each leaf lists the values of one grid axis.
    config.sweep = {"model": {"visual_prompt_depth": (0, 3, 6, 9, 12)}}
    return config
