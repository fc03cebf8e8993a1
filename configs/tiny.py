"""A tiny random MP-IQE (or LIQE) for tests and quick checks: CLIP `tiny` on 32 x 32 crops.

Arguments: model (mpiqe | liqe), depth (visual_prompt_depth), prompts, ctx, groups (preset),
dataset (the one training set, e.g. `synthetic_iqa/small`, whose 4 references want
`--set data.split=50/25/25`).
"""
from mmpiqa_jax import config as config_lib

common = config_lib.load_sibling(__file__, "common")


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, model="mpiqe", depth=2, prompts=4, ctx=4, groups="",
                               dataset="synthetic_iqa")
    config = common.base_config(arg.model)
    config.num_steps = 100
    config.steps_per_epoch = 10
    config.batch_size = 8
    config.log_every = 10
    config.eval_every = 50
    config.checkpoint_every = 50
    m = config.model
    m.variant = "tiny"
    m.num_text_context = arg.ctx
    if arg.model == "mpiqe":
        m.visual_prompt_depth = arg.depth
        m.num_visual_prompts = arg.prompts
        m.fusion_layers = 1
        m.fusion_width = 32
        m.fusion_heads = 2
    d = config.data
    d.batch_sizes = {arg.dataset: 8}
    d.crops_per_image = 2
    d.crop_size = 32
    d.eval_crops = 2
    d.num_workers = 0                 # no decoding processes: a tiny model's batches are cheap
    config.optimizer.warmup_steps = 5
    config.optimizer.param_groups = arg.groups or ("prompt" if arg.model == "mpiqe" else "full")
    config.loss.dwa = False
    return config
