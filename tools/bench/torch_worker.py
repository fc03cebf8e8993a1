"""The torch worker: `tools/torch_reference.py` on the weights the JAX side exported."""
from __future__ import annotations

import os

import numpy as np

from bench import memory, plans, timing


def torch_trainer(args, plan: plans.Plan, model_name: str, depth: int, dev) -> dict:
    """The reference model on the weights the JAX worker exported, its train step and a
    `train()` that runs one step on the same fixed batch."""
    import torch

    import torch_reference as tr

    cuda = dev.type == "cuda"
    config = plans.model_config(model_name, plan, depth)
    model = tr.load(plans.export_dir(args.tmp, model_name, depth),
                    mode=config.optimizer.param_groups, text_length=args.text_length).to(dev)
    # LIQE's 495 x 77 text tower keeps ~20 GB of activations for its backward in float32; where
    # that (plus weights, moments and the image tower) exceeds the free memory, torch recomputes
    # each text block in the backward instead (open_clip's grad checkpointing; same values).
    recompute, text_gib = False, None
    if model_name == "liqe" and not cuda:
        text = model.clip.transformer
        text_gib = memory.text_backward_gib(*model.joint.token_ids.shape, text.width,
                                            text.layers)
        if text_gib + 4.0 > memory.mem_available_gib():
            model.clip.set_grad_checkpointing(True)
            recompute = True
    res = model.clip.visual.image_size[0]
    batch = {k: v.to(dev) for k, v in tr.torch_batch(
        tr.random_batch(np.random.default_rng(1), plan.images, plan.crops, res)).items()}
    opt = tr.make_optimizer(model, config.optimizer.to_dict())
    step = tr.make_train_step(model, opt, clip_norm=config.optimizer.clip_norm)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda and plan.dtype == "bfloat16"
                else torch.autocast("cpu", enabled=False))
    t = {"model": model, "resolution": res, "autocast": autocast, "recompute": recompute,
         "text_backward_gib": text_gib,
         "num_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}

    def train():
        with autocast:
            loss, grad_norm = step(batch)
        if cuda:
            torch.cuda.synchronize()
        if "first" not in t:
            t["first"] = (loss.item(), grad_norm.item())

    t["train"] = train
    return t


def worker_torch(args, plan: plans.Plan) -> dict:
    import torch

    import torch_reference as tr  # with open_clip: part of the libraries, before `rss_libs`

    torch.set_num_threads(os.cpu_count())
    torch.ones(8) @ torch.ones(8)  # the libraries loaded: what the process holds before any model
    rss_libs = memory.status_kib("VmRSS")
    cuda = args.device and torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    t = torch_trainer(args, plan, args.model, args.depth, dev)
    model, res, autocast = t["model"], t["resolution"], t["autocast"]
    sweep_trainer = lambda depth: torch_trainer(args, plan, args.model, depth, dev)
    marks = {}

    def before_timing():
        memory.reset_memory_marks(marks)()
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    train_s, train_all = timing.time_training(plan, args.model, t["train"], before_timing)
    out = {"train_s": train_s, "train_all": train_all, "rss_before_mib": marks["rss_before"] / 1024,
           "first_loss": t["first"][0], "first_grad_norm": t["first"][1],
           "rss_libs_mib": rss_libs / 1024, "text_recomputed": t["recompute"],
           "trainable": t["num_trainable"],
           "peak_rss_mib": (memory.status_kib("VmHWM") / 1024 if marks["reset"]
                            else float("nan")),
           "threads": torch.get_num_threads()}
    if t["text_backward_gib"] is not None:
        out["text_backward_gib"] = t["text_backward_gib"]
    if cuda:
        out["device_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if args.skip_eval:
        return out | {"sweep": timing.sweep(args, plan, sweep_trainer)}
    model.eval()

    def timed(fn, warmup, repeats, keep=None):
        def run():
            with torch.inference_mode(), autocast:
                result = fn()
            if cuda:
                torch.cuda.synchronize()
            if keep is not None:
                keep[:] = [result]
        return timing.median_time(run, warmup, repeats)[0]

    text_s, text = 0.0, []
    if args.model == "liqe":
        # LIQE's code runs its 495 x 77 text tower on every inference call, as slow as a train
        # step here. It is timed once and added to each crop setting's time for the rest of the
        # call (the same forward, given those text features): the call runs the two one after
        # the other, so the sum is its time, and the slow part is not run twice per figure.
        text_s = timed(model.text_features, plan.liqe_warmup, plan.liqe_repeats, keep=text)
        out["text_s"] = text_s
    for key, crops in (("eval15", plan.eval_crops), ("eval1", 1)):
        images = plan.eval_images if crops > 1 else plan.eval_images * plan.eval_crops
        pixels = tr.torch_batch(tr.random_batch(np.random.default_rng(2), images, crops,
                                                res))["pixels"].to(dev)
        # LIQE given the text features timed above; MP-IQE's prompt learner runs every call.
        out[key + "_ips"] = images / (text_s + timed(lambda: model(pixels, *text)["score"],
                                                     plan.warmup, plan.repeats))
    model = t = None  # freed before the sweep
    return out | {"sweep": timing.sweep(args, plan, sweep_trainer)}
