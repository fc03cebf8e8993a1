"""`tools/benchmark.py`'s report is rendered from the saved JSON figures: the committed
docs/benchmarks.md is exactly what `--report-only docs/benchmarks.json` renders."""
import dataclasses
import json
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools")]

from bench import plans, report  # noqa: E402


@pytest.fixture(scope="module")
def saved():
    with open(os.path.join(ROOT, "docs", "benchmarks.json")) as f:
        return json.load(f)


def test_committed_report_is_the_rendered_json(saved):
    with open(os.path.join(ROOT, "docs", "benchmarks.md")) as f:
        assert report.render(saved) == f.read()


def test_figures_come_from_the_json(saved):
    """A changed figure in the JSON changes the report (nothing is typed in), and the ratio and
    target judgement follow it."""
    r = saved["results"]
    jax_ips = saved["plan"]["images"] / r["jax_liqe_0"]["train_s"]
    slower = {**saved, "results": {**r, "torch_liqe_0": {**r["torch_liqe_0"],
                                                         "train_s": saved["plan"]["images"]
                                                         / (jax_ips / 2.5)}}}
    text = report.render(slower)
    assert re.search(r"\| LIQE \(full\) \| [0-9.]+ \| [0-9.]+ \| \*\*2\.50x\*\* \|", text)
    assert re.search(r"\| LIQE train step >= 3x .* \| 2\.50x .* \| \*\*not met\*\* \|", text)


def test_plan_round_trip(saved):
    plan = plans.plan_from_dict(saved["plan"])
    assert plan == plans.FULL and plans.plan_name(plan) == "full"
    with pytest.raises(ValueError, match="unknown plan keys \\['batch'\\]"):
        plans.plan_from_dict({**saved["plan"], "batch": 1})


def test_device_report_measures_against_the_accelerator_peak(saved):
    """On an accelerator plan the achieved-FLOP/s table divides by the card's peak, not the
    CPU matmul's."""
    peak = {"accel_peak": 989e12, "accel_peak_source": "H200 table"}
    results = {k: {**v, **peak} for k, v in saved["results"].items()}
    run = {**saved["run"], "name": "device"}  # the name decides the report, as in a device run
    text = report.render({**saved, "plan": dataclasses.asdict(plans.DEVICE), "results": results,
                          "run": run})
    j = results["jax_liqe_0"]
    achieved = j["flops"] / j["train_s"]
    assert (f"| liqe | {j['flops']:.4g} | {j['train_s']:.4f} | {achieved / 1e12:.1f} | "
            f"989 (H200 table) | {100 * achieved / 989e12:.1f}% |") in text
