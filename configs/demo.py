"""The embedded demo: a small, randomly initialised MP-IQE trained on `synthetic_iqa` in minutes.

    mmpiqa demo                                    # builds synthetic_iqa if absent, trains, tests
    mmpiqa train --config configs/demo.py --workdir DIR    # the same run as an ordinary config

No pretrained CLIP can be assumed, so the demo differs from MP-IQE's defaults; docs/demo.md
says why each choice is made and how the settings were compared (on validation only).
"""
from mmpiqa_jax import config as config_lib

common = config_lib.load_sibling(__file__, "common")


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, steps=2000, dataset="synthetic_iqa", model="mpiqe")
    config = common.base_config(arg.model)
    config.method = ("MP-IQE" if arg.model == "mpiqe" else "LIQE") + " (demo, random tiny CLIP)"
    config.num_steps = arg.steps
    config.steps_per_epoch = 30       # ~470 training images / 16 per step
    config.batch_size = 16
    config.log_every = 25
    config.eval_every = 500
    config.checkpoint_every = 500
    config.keep_checkpoints = 2

    m = config.model
    m.variant = "tiny"
    if arg.model == "mpiqe":
        m.num_visual_prompts = 4
        m.visual_prompt_depth = 2     # every layer of the tiny CLIP
        m.num_text_context = 4
        m.fusion_layers = 1
        m.fusion_width = 64
        m.fusion_heads = 2
    # LIQE is the baseline on the same data, crops, optimiser and steps (`mmpiqa demo
    # --compare`): its fixed 495 prompts, no visual prompts, no fusion encoder.
    # Unrolled, nothing recomputed: the tiny CLIP's 2 + 2 layers gain nothing from the scan
    # (the values are the same up to float rounding).
    m.scan_layers = False
    m.remat = "none"

    d = config.data
    d.batch_sizes = {arg.dataset: 16}
    d.crops_per_image = 4
    d.crop_size = 32
    d.train_crop_mode = "random"
    d.split = "47/18/35"              # of 17 references: 8 train, 3 validation, 6 test
    d.split_seed = 0
    d.val_part = "val"
    d.eval_crop_mode = "liqe"
    d.eval_crops = 108                # LIQE's grid at 32 px, stride 32: every tile of 384 x 288

    o = config.optimizer
    o.name = "adamw"
    o.learning_rate = 3e-4
    o.weight_decay = 1e-4
    o.warmup_steps = 50
    o.schedule = "cosine"
    o.clip_norm = 1.0
    # Everything trains but the temperature and the word embedding table: 49408 x 128 rows, of
    # which the prompts use a few dozen; updating it all would cost more than the model's step.
    with o.ignore_type():  # custom groups replace the default's preset name
        o.param_groups = ((r"clip/(logit_scale|token_embedding/.*)", None),
                          (r"(?!clip/(logit_scale|token_embedding/)).*", 1.0))

    o.ema_decay = 0.998               # evaluate, choose and test the moving average

    config.loss.dwa = False
    config.eval.batch_size = 32
    return config
