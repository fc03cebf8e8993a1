"""The ten-split protocol: a base config trained once per standard split seed, results aggregated.

    mmpiqa sweep --config configs/ten_splits.py:base=mpiqe,depth=6 --workdir DIR

`base` names a config file beside this one (default `mpiqe`); the other arguments go to it. A base
that declares its own grid (e.g. `ablation_depth`) keeps it, crossed with the seeds. The sweep's
table gives each point's results and the median, mean and std over the seeds.
"""
import os

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.data.splits import STANDARD_SEEDS


def get_config(arg=None):
    items = [item for item in (arg or "").split(",") if item.strip()]
    base = [item for item in items if item.partition("=")[0].strip() == "base"]
    rest = ",".join(item for item in items if item not in base)
    name = base[-1].partition("=")[2].strip() if base else "mpiqe"
    if not os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")):
        raise ValueError(f"config argument base={name!r}: no config file {name}.py beside "
                         f"{os.path.basename(__file__)}")
    config = config_lib.load_sibling(__file__, name).get_config(rest or None)
    sweep = config.sweep.to_dict() if "sweep" in config and config.sweep else {}
    sweep.setdefault("data", {})["split_seed"] = tuple(STANDARD_SEEDS)
    with config.unlocked():
        config.sweep = sweep
    return config
