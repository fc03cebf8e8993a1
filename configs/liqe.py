"""LIQE (Zhang et al., CVPR 2023): CLIP fully fine-tuned on the 495 joint prompts.

    mmpiqa train --config configs/liqe.py --workdir DIR
    mmpiqa train --config configs/liqe.py:ctx=4 ...   # CoOp variant: learnable "a photo of a"

Arguments: variant (CLIP), ctx (num_text_context; 0 = LIQE's fixed template), prompts (`joint`:
the 495 prompts; `quality`: the 5 "a photo with {q} quality" of LIQE's train_liqe_single.py,
pyiqa's `liqe`, trained on quality alone), checkpoint (a path `mmpiqa convert` wrote, or
`random`), train and test (`+`-separated datasets trained on,
default LIQE's six, and tested whole, cross-dataset; e.g. `train=koniq10k,test=live_iqa+csiq`).
"""
from mmpiqa_jax import config as config_lib

common = config_lib.load_sibling(__file__, "common")


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, variant="ViT-B/32", ctx=0, prompts="joint", checkpoint="",
                               train="", test="")
    config = common.base_config("liqe")
    common.set_datasets(config, arg.train, arg.test)
    m = config.model
    m.variant = arg.variant
    m.clip_checkpoint = arg.checkpoint
    m.num_text_context = arg.ctx
    m.liqe_prompts = arg.prompts
    o = config.optimizer
    o.name = "adamw"
    o.learning_rate = 5e-6             # LIQE
    o.weight_decay = 1e-3              # LIQE
    o.warmup_steps = 0                 # LIQE has none
    o.schedule = "cosine"
    o.cosine_period_epochs = 5         # LIQE: CosineAnnealingLR, T_max 5 epochs of 200 steps
    o.clip_norm = 0.0                  # LIQE does not clip
    o.param_groups = "full"            # everything but logit_scale
    config.loss.dwa = True             # LIQE: DWA over the three tasks from the third epoch
    if arg.prompts == "quality":       # LIQE's train_liqe_single.py: quality labels only
        config.loss.scene = 0.0
        config.loss.distortion = 0.0
    return config
