"""`tools/benchmark.py`'s report is rendered from the saved JSON figures: the committed
docs/benchmarks.md is exactly what `--report-only docs/benchmarks.json` renders."""
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
