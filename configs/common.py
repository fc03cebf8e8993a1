"""Shared defaults of the training configs: every key any trainer reads, each one documented.

Loaded by the config files with `config_lib.load_sibling(__file__, "common")`. Defaults marked
"paper" follow docs/method.md's statements; "LIQE" follow LIQE's code; the rest are our choices.
"""
import ml_collections

from mmpiqa_jax.errors import UserError

# LIQE's six training sets (registry names) and its per-step batch from each (docs/method.md).
LIQE_BATCH_SIZES = {"live_iqa": 4, "csiq": 4, "bid": 4, "live_challenge": 4, "koniq10k": 16,
                    "kadid10k": 16}


def set_datasets(config: ml_collections.ConfigDict, train: str = "", test: str = "") -> None:
    """Config arguments `train=koniq10k+kadid10k` (datasets trained on, LIQE's batch from each,
    16 for a dataset LIQE does not use; "" = LIQE's six) and `test=live_iqa+csiq` (datasets
    tested whole, never trained on: cross-dataset); `+` separates names."""
    if train:
        names = [n.strip() for n in train.split("+") if n.strip()]
        config.data.batch_sizes = {n: LIQE_BATCH_SIZES.get(n, 16) for n in names}
        config.batch_size = sum(config.data.batch_sizes.values())
    if test:
        config.eval.datasets = tuple(n.strip() for n in test.split("+") if n.strip())


def base_config(model: str = "mpiqe") -> ml_collections.ConfigDict:
    """The run-level keys and all sections with their defaults; `model`: mpiqe or liqe."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_steps = 16_000              # LIQE: 80 epochs x 200 steps
    c.steps_per_epoch = 200           # LIQE's epoch; DWA and `cosine_period_epochs` count in it
    c.batch_size = 48                 # images per step, summed over datasets (4*4 + 2*16)
    c.log_every = 50
    c.eval_every = 1000
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.async_checkpointing = True      # write checkpoints in the background while training goes on
    c.method = ""                     # name in results tables; "" = the workdir's folder name

    # How parameters, Adam moments and EMA are laid out over the devices (the batch is always
    # split over all of them; mmpiqa_jax/train/sharding.py): "replicate" (whole on every chip) or
    # "fsdp" (split, gathered per block).
    c.sharding = ml_collections.ConfigDict()
    c.sharding.strategy = "replicate"
    c.sharding.min_size = 2**16       # tensors with fewer elements stay whole

    c.model = model_config(model)
    c.data = data_config()
    c.optimizer = optimizer_config()
    c.loss = loss_config()
    c.eval = eval_config()
    return c


def model_config(name: str = "mpiqe") -> ml_collections.ConfigDict:
    """The `model` section: the CLIP it stands on, then the keyword arguments of `name`'s
    model class (`models/iqa.py`, which takes exactly these)."""
    if name not in ("mpiqe", "liqe"):
        raise UserError(f"model {name!r}: expected mpiqe or liqe")
    m = ml_collections.ConfigDict()
    m.name = name                     # "mpiqe" or "liqe"
    m.variant = "ViT-B/32"            # CLIP architecture by name (LIQE uses ViT-B/32), or
                                      # "checkpoint": the architecture clip_checkpoint's file states
    m.clip_checkpoint = ""            # path for clip.load (see mmpiqa convert); "random" = random
                                      # init of variant; "" allowed for tiny only
    m.dtype = "float32"               # compute dtype ("bfloat16" on accelerators); params float32
    # How CLIP's blocks run (values are the same either way; see layers.Transformer).
    m.scan_layers = True              # one lax.scan over the blocks (compiles one block); False: unrolled
    m.remat = "dots"                  # kept for the backward pass: "dots" (weight matmuls' outputs;
                                      # the rest recomputed), "full" (block inputs only), "none"
    # Text prompts (paper: dual scene / distortion prompts; CoOp-style context is our reading).
    m.num_text_context = 4 if name == "mpiqe" else 0  # learnable vectors per bank; 0 = plain prompts
    m.text_context_init = "a photo of a"  # phrase whose word embeddings start the context; "" = N(0, 0.02)
    m.text_prompt_depth = 1           # text layers with their own context, from the input (1 = CoOp)
    if name == "liqe":
        m.liqe_prompts = "joint"      # the 495 joint prompts; "quality": the 5 of LIQE's
                                      # train_liqe_single.py (pyiqa's `liqe`)
        return m
    # Visual prompts (paper: multi-layer prompts; numbers are our choice, VPT-deep's defaults).
    m.num_visual_prompts = 8
    m.visual_prompt_depth = 12        # layers with their own prompts, from the input; 0 = none
    # Multimodal fusion encoder (published summaries: cross-attention; sizes are our choice).
    m.fusion_layers = 2
    m.fusion_width = 256
    m.fusion_heads = 4
    m.fusion_mlp_ratio = 4
    m.scene_activation = "softmax"    # scene probabilities: "softmax" over scenes (LIQE) or "sigmoid"
    return m


def data_config() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.batch_sizes = dict(LIQE_BATCH_SIZES)  # dataset name -> images per step (LIQE)
    d.crops_per_image = 3             # LIQE: 3 random 224 crops per image
    d.crop_size = 224
    d.random_flip = True              # LIQE: random horizontal flip
    d.random_rot90 = False            # turn each crop by a random multiple of 90 degrees
    d.train_crop_mode = "grid"        # "grid": LIQE's stride-32 grid positions; "random": anywhere
    d.split = "70/10/20"              # where splits come from (data/split_spec.py, README):
                                      # "70/10/20" by reference image, train/val/test percent
                                      # (LIQE's protocol; "80/20" = train/test); "official"
                                      # (KonIQ); "liqe:DIR" (LIQE's files and scene labels);
                                      # "pyiqa:META.csv[:SPLIT.pkl]"; per dataset, e.g.
                                      # "koniq10k:official,*:liqe:DIR"
    d.split_seed = 0                  # which of the ten splits (LIQE's splits2/<seed + 1>)
    d.val_part = "val"                # part that picks the best checkpoint; "" = no validation,
                                      # the last checkpoint is tested (for 2-part splits)
    d.eval_crop_mode = "liqe"         # "liqe": `eval_crops` grid crops; "center": one; "full": whole
                                      # image resized to crop_size
    d.eval_crops = 15                 # crops per image at evaluation (LIQE's test-time crops)
    d.data_dir = ""                   # prepared datasets; "" = $MMPIQA_DATA_DIR or ~/mmpiqa_data
    d.num_workers = -1                # decoding processes for training (0: in the main process;
                                      # -1: one per core but one, pipeline.host_workers)
    d.num_threads = 2                 # reading threads in each (per-example work)
    d.worker_buffer_size = 0          # examples each worker keeps ready (0: two batches' worth)
    return d


def eval_config() -> ml_collections.ConfigDict:
    e = ml_collections.ConfigDict()
    e.batch_size = 32                 # images per evaluation batch (each with its eval crops)
    e.datasets = ()                   # cross-dataset tests: datasets evaluated whole, never trained on
    return e


def optimizer_config() -> ml_collections.ConfigDict:
    o = ml_collections.ConfigDict()
    o.name = "adamw"                  # "adamw" or "sgd"
    o.learning_rate = 2e-3            # our choice for prompts (CoOp uses 2e-3 with SGD)
    o.weight_decay = 1e-3             # LIQE
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = 1e-8
    o.momentum = 0.9                  # SGD only
    o.warmup_steps = 200              # linear warm-up from 0 (one epoch)
    o.schedule = "cosine"             # "cosine" or "constant" after warm-up
    o.cosine_period_epochs = 0        # 0: one cosine decay over the run; >0: torch's
                                      # CosineAnnealingLR with T_max = that many epochs (LIQE: 5)
    o.min_lr_ratio = 0.0              # floor of the cosine, as a fraction of the peak
    o.clip_norm = 1.0                 # global gradient-norm clip; 0 = none
    o.accumulation_steps = 1          # >1: the step scans batch_size / k micro-batches, one update
    o.ema_decay = 0.0                 # >0: evaluate, score and export an exponential moving
                                      # average of the trained parameters (Polyak averaging)
    o.param_groups = "prompt"         # preset name, or ((regex, lr multiplier or None), ...)
    return o


def loss_config() -> ml_collections.ConfigDict:
    w = ml_collections.ConfigDict()
    w.quality = 1.0                   # pairwise fidelity within a dataset (LIQE)
    w.distortion = 1.0                # fidelity on the distortion class (LIQE)
    w.scene = 1.0                     # binary fidelity per scene (LIQE)
    w.l1 = 0.0                        # optional L1 on the normalised quality (our addition)
    w.plcc = 0.0                      # optional PLCC loss as in pyiqa (our addition)
    w.dwa = True                      # Dynamic Weight Average over the weighted tasks (LIQE)
    w.dwa_temperature = 2.0           # LIQE's T
    return w
