"""MP-IQE: CLIP with deep visual prompts, dual text prompts and a fusion encoder; CLIP frozen.

    mmpiqa train --config configs/mpiqe.py:variant=ViT-B/32,depth=12,prompts=8 --workdir DIR

Arguments: variant (CLIP), depth (visual_prompt_depth), prompts (num_visual_prompts),
ctx (num_text_context), text_depth (text_prompt_depth), checkpoint (clip_checkpoint: a path
`mmpiqa convert` wrote, or `random`), train and test (`+`-separated datasets trained on, default
LIQE's six, and tested whole, cross-dataset; e.g. `train=koniq10k,test=live_iqa+csiq`).
"""
from mmpiqa_jax import config as config_lib

common = config_lib.load_sibling(__file__, "common")


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, variant="ViT-B/32", depth=12, prompts=8, ctx=4, text_depth=1,
                               checkpoint="", train="", test="")
    config = common.base_config()
    common.set_datasets(config, arg.train, arg.test)
    m = config.model
    m.variant = arg.variant
    m.clip_checkpoint = arg.checkpoint
    m.visual_prompt_depth = arg.depth
    m.num_visual_prompts = arg.prompts
    m.num_text_context = arg.ctx
    m.text_prompt_depth = arg.text_depth
    config.optimizer.param_groups = "prompt"
    return config
