"""The ten-split protocol: a base config trained once per standard split seed, results aggregated.

    mmpiqa sweep --config configs/ten_splits.py:base=mpiqe,depth=6 --workdir DIR
    # LIQE's own ten splits (IQA_Database/<db>/splits2/1..10) and scene labels, as in the papers:
    mmpiqa sweep --config configs/ten_splits.py:base=liqe,split=liqe:/data/IQA_Database ...

`base` names a config file beside this one (default `mpiqe`); `split` sets `data.split` (see
`mmpiqa_jax/data/split_spec.py`; no commas here, use `--set data.split=...` for a per-dataset
one); the other arguments go to the base. A base that declares its own grid (e.g.
`ablation_depth`) keeps it, crossed with the seeds. The sweep's table gives each point's results
and the median, mean and std over the seeds; `tools/results_table.py` makes the papers' table.
"""
import os

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.data.splits import STANDARD_SEEDS


def get_config(arg=None):
    items = [item for item in (arg or "").split(",") if item.strip()]
    ours = {"base": "mpiqe", "split": ""}
    for item in items:
        key, _, value = item.partition("=")
        if key.strip() in ours:
            ours[key.strip()] = value.strip()
    rest = ",".join(item for item in items if item.partition("=")[0].strip() not in ours)
    name = ours["base"]
    if not os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")):
        raise ValueError(f"config argument base={name!r}: no config file {name}.py beside "
                         f"{os.path.basename(__file__)}")
    config = config_lib.load_sibling(__file__, name).get_config(rest or None)
    sweep = config.sweep.to_dict() if "sweep" in config and config.sweep else {}
    sweep.setdefault("data", {})["split_seed"] = tuple(STANDARD_SEEDS)
    with config.unlocked():
        config.sweep = sweep
    if ours["split"]:
        config.data.split = ours["split"]
    return config
