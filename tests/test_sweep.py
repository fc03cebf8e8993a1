"""`mmpiqa sweep`: grid expansion into runs, resumability, the comparison table and the plot."""
import json
from pathlib import Path

import numpy as np
import pytest

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.cli import main as cli
from mmpiqa_jax.evaluate import sweep_report
from mmpiqa_jax.experiments import sweep

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.py")


def grid_config(grid, overrides=()):
    config = config_lib.load_config(TINY, overrides)
    with config.unlocked():
        config.sweep = grid
    return config


def fake_srcc(config) -> float:
    """A known SRCC per point, different for every depth, prompt count and seed."""
    m = config.model
    return 0.5 + 0.03 * m.visual_prompt_depth + 0.002 * m.num_visual_prompts \
        + 0.001 * config.data.split_seed ** 2


class FakeTrainer:
    """Stands in for `train_and_evaluate`: records calls and writes eval jsons like the trainer."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = [], fail_at

    def __call__(self, config, workdir):
        self.calls.append((Path(workdir).name, config.model.visual_prompt_depth,
                           config.model.num_visual_prompts, config.data.split_seed))
        if len(self.calls) == self.fail_at:
            raise RuntimeError("killed")
        results = {}
        for split, srcc in (("test", fake_srcc(config)), ("val", 0.0)):
            record = {"dataset": "synthetic_iqa", "split": split, "srcc": srcc,
                      "plcc": srcc - 0.1, "krcc": 0.3, "rmse": 1.0, "plcc_logistic": srcc,
                      "rmse_logistic": 1.0, "n": 20}
            path = Path(workdir) / "eval" / f"synthetic_iqa-{split}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
            results[f"synthetic_iqa-{split}"] = record
        return results


def table_rows(text: str, section: int = 0) -> list[list[str]]:
    """The body rows of the `section`-th markdown table in `text`."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            current = current if current is not None else tables.append([]) or tables[-1]
            current.append([c.strip() for c in line.strip("|").split("|")])
        else:
            current = None
    return tables[section][2:]  # header and alignment rows dropped


def test_grid_runs_every_point_once_and_resumes(tmp_path):
    config = grid_config({"model": {"visual_prompt_depth": (0, 2), "num_visual_prompts": (2, 4)}})
    trainer = FakeTrainer()
    points = sweep.run_sweep(config, tmp_path, train_fn=trainer, log=lambda _: None)

    # expand_sweep orders the keys by name: num_visual_prompts, then visual_prompt_depth.
    assert [c[:3] for c in trainer.calls] == [
        ("num_visual_prompts=2,visual_prompt_depth=0", 0, 2),
        ("num_visual_prompts=2,visual_prompt_depth=2", 2, 2),
        ("num_visual_prompts=4,visual_prompt_depth=0", 0, 4),
        ("num_visual_prompts=4,visual_prompt_depth=2", 2, 4)]
    assert all(p.done for p in points)

    text = (tmp_path / "sweep.md").read_text()
    rows = table_rows(text)
    # The test evaluation only (validation is left out); values as the trainer wrote them.
    assert rows == [[str(prompts), str(depth), f"{0.5 + 0.03 * depth + 0.002 * prompts:.4f}",
                     f"{0.4 + 0.03 * depth + 0.002 * prompts:.4f}"]
                    for prompts in (2, 4) for depth in (0, 2)]
    assert "synthetic_iqa-test SRCC" in text and "synthetic_iqa-val" not in text
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = FakeTrainer()
    sweep.run_sweep(config, tmp_path, train_fn=again, log=lambda _: None)
    assert again.calls == []
    assert table_rows((tmp_path / "sweep.md").read_text()) == rows


def test_interrupted_sweep_resumes_the_unfinished_points(tmp_path):
    config = grid_config({"model": {"visual_prompt_depth": (0, 1, 2)}})
    with pytest.raises(RuntimeError, match="killed"):
        sweep.run_sweep(config, tmp_path, train_fn=FakeTrainer(fail_at=2), log=lambda _: None)
    # The killed point's folder exists (its checkpoints would be there) but is not done.
    assert (tmp_path / "visual_prompt_depth=1").is_dir()
    assert not (tmp_path / "visual_prompt_depth=1" / sweep.POINT_FILE).exists()

    trainer = FakeTrainer()
    sweep.run_sweep(config, tmp_path, train_fn=trainer, log=lambda _: None)
    assert [c[0] for c in trainer.calls] == ["visual_prompt_depth=1", "visual_prompt_depth=2"]


def test_stopped_training_is_not_marked_done(tmp_path):
    config = grid_config({"model": {"visual_prompt_depth": (0, 1)}})
    calls = []
    stopped = lambda config, workdir: calls.append(workdir) or {}
    points = sweep.run_sweep(config, tmp_path, train_fn=stopped, log=lambda _: None)
    assert len(calls) == 1  # the sweep stops with the trainer
    assert not any(p.done for p in points)
    assert table_rows((tmp_path / "sweep.md").read_text()) == [["0"], ["1"]]


def test_finished_point_with_changed_config_is_an_error(tmp_path):
    grid = {"model": {"visual_prompt_depth": (0, 1)}}
    sweep.run_sweep(grid_config(grid), tmp_path, train_fn=FakeTrainer(), log=lambda _: None)
    with pytest.raises(ValueError, match=r"visual_prompt_depth=0 finished with another config "
                                         r"\(num_steps: 100 -> 7\)"):
        sweep.run_sweep(grid_config(grid, ["num_steps=7"]), tmp_path, train_fn=FakeTrainer(),
                        log=lambda _: None)


def test_ten_split_protocol_aggregates_over_seeds(tmp_path):
    config = config_lib.load_config("configs/ten_splits.py:base=tiny,depth=1")
    # ten_splits crosses the base's own grid with the seeds: add depth to check the grouping.
    with config.unlocked():
        config.sweep.model = {"visual_prompt_depth": (0, 2)}
    trainer = FakeTrainer()
    points = sweep.run_sweep(config, tmp_path, train_fn=trainer, log=lambda _: None)
    assert len(points) == 20
    assert sorted(c[3] for c in trainer.calls) == sorted(list(range(10)) * 2)

    text = (tmp_path / "sweep.md").read_text()
    assert len(table_rows(text, 0)) == 20
    aggregated = table_rows(text, 1)
    seeds = np.arange(10)
    for row, depth in zip(aggregated, (0, 2)):
        srcc = 0.5 + 0.03 * depth + 0.002 * 4 + 0.001 * seeds ** 2  # tiny: 4 visual prompts
        assert row[:2] == [str(depth), "10"]
        assert row[2] == (f"{np.median(srcc):.4f} ({np.mean(srcc):.4f} ± {np.std(srcc):.4f})")
        assert row[3].startswith(f"{np.median(srcc - 0.1):.4f} (")
    # The median of squares 0..81 is (16 + 25) / 2: not the mean, not a single split's value.
    assert aggregated[0][2].startswith(f"{0.5 + 0.008 + 0.0205:.4f}")

    groups = sweep_report.seed_aggregates(points, sweep.sweep_keys(config))
    assert [(g[0], g[1]) for g in groups] == [({"model.visual_prompt_depth": 0}, 10),
                                              ({"model.visual_prompt_depth": 2}, 10)]


def test_ten_splits_config():
    config = config_lib.load_config("configs/ten_splits.py:base=tiny,depth=3")
    runs = config_lib.expand_sweep(config)
    assert [c.data.split_seed for _, c in runs] == list(range(10))
    assert all(c.model.visual_prompt_depth == 3 and c.model.variant == "tiny" for _, c in runs)
    crossed = config_lib.load_config("configs/ten_splits.py:base=ablation_depth")
    assert len(config_lib.expand_sweep(crossed)) == 50
    with pytest.raises(ValueError, match="base='nope': no config file nope.py"):
        config_lib.load_config("configs/ten_splits.py:base=nope")


def test_point_folders_are_safe_path_components(tmp_path):
    config = grid_config({"model": {"variant": ("ViT-B/32", "ViT-B/16")}})
    folders = [p.workdir.name for p in sweep.plan(config, tmp_path)]
    assert folders == ["variant=ViT-B_32", "variant=ViT-B_16"]
    clash = grid_config({"model": {"variant": ("a/b", "a_b")}})
    with pytest.raises(ValueError, match="share the folder 'variant=a_b'"):
        sweep.plan(clash, tmp_path)


def test_cli_sweep(tmp_path, monkeypatch, capsys):
    from mmpiqa_jax.train import run as run_lib

    trainer = FakeTrainer()
    monkeypatch.setattr(run_lib, "train_and_evaluate", trainer)
    args = ["sweep", "--config", "configs/ablation_depth.py", "--workdir", str(tmp_path),
            "--set", "sweep.model.visual_prompt_depth=(0, 6)", "--set", "num_steps=5"]
    assert cli.main(args + ["--dry-run"]) == 0
    assert capsys.readouterr().out.split() == [
        "pending", str(tmp_path / "visual_prompt_depth=0"),
        "pending", str(tmp_path / "visual_prompt_depth=6")]
    assert cli.main(args) == 0
    assert [c[1] for c in trainer.calls] == [0, 6]
    assert "| 6 | 0.6960 | 0.5960 |" in capsys.readouterr().out  # mpiqe: 8 prompts
    assert cli.main(args + ["--dry-run"]) == 0
    assert capsys.readouterr().out.split()[::2] == ["done", "done"]

    assert cli.main(["sweep", "--config", "configs/ablation_depth.py", "--workdir",
                     str(tmp_path), "--set", "model.no_such_key=1"]) == 1
    assert "unknown config key 'model.no_such_key'" in capsys.readouterr().err


def test_config_without_grid_is_one_point(tmp_path):
    config = config_lib.load_config(TINY)
    trainer = FakeTrainer()
    (point,) = sweep.run_sweep(config, tmp_path, train_fn=trainer, log=lambda _: None)
    assert point.workdir == tmp_path / "run" and [c[0] for c in trainer.calls] == ["run"]
    # tiny: depth 2, 4 prompts
    assert table_rows((tmp_path / "sweep.md").read_text()) == [["0.5680", "0.4680"]]
    assert (tmp_path / "sweep.png").is_file()


def test_parts_split_the_grid_between_jobs(tmp_path):
    """--part I/N: two jobs (one per pod slice) train disjoint halves; together, every point."""
    config = grid_config({"model": {"visual_prompt_depth": (0, 2), "num_visual_prompts": (2, 4)}})
    first, second = FakeTrainer(), FakeTrainer()
    points = sweep.run_sweep(config, tmp_path, train_fn=first, log=lambda _: None, part="0/2")
    assert [c[0] for c in first.calls] == ["num_visual_prompts=2,visual_prompt_depth=0",
                                          "num_visual_prompts=4,visual_prompt_depth=0"]
    assert [p.done for p in points] == [True, False, True, False]
    points = sweep.run_sweep(config, tmp_path, train_fn=second, log=lambda _: None, part="1/2")
    assert [c[0] for c in second.calls] == ["num_visual_prompts=2,visual_prompt_depth=2",
                                           "num_visual_prompts=4,visual_prompt_depth=2"]
    assert all(p.done for p in points)
    assert len(table_rows((tmp_path / "sweep.md").read_text())) == 4
    for bad in ("2/2", "1", "a/b"):
        with pytest.raises(ValueError, match=r"--part=.* must be I/N with 0 <= I < N"):
            sweep.run_sweep(config, tmp_path, train_fn=FakeTrainer(), part=bad)
