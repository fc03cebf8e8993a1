"""The README as a newcomer uses it: short, every link and named file there, every `mmpiqa`
command accepted by the real parser with the configs it names loading, and the scoring of
one's own images with a released LIQE model run as written (on a small model in pyiqa's file
format)."""
import dataclasses
import os
import re
import shlex

import numpy as np
import pytest
from flax import nnx
from PIL import Image
from workdirs import REPO, perturb

from mmpiqa_jax import config as config_lib
from mmpiqa_jax.cli import main as cli
from mmpiqa_jax.models import clip_model, iqa
from mmpiqa_jax.train import inference

README = (REPO / "README.md").read_text()
# The values a reader's shell gives the README's loop variables.
SHELL = {"$d": "live_iqa", "$method": "liqe", "$HOME": "/home/reader"}


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def commands(block: str) -> list[str]:
    """Every `mmpiqa ...` command of a bash block, continuations joined, comments dropped."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|;", line.split(" #")[0]):
            part = part.strip()
            if part.startswith("mmpiqa "):
                for var, value in SHELL.items():
                    part = part.replace(var, value)
                out.append(part)
    return out


README_COMMANDS = [c for block in bash_blocks(README) for c in commands(block)]


def test_the_readme_is_short_and_what_it_names_is_there():
    assert len(README.splitlines()) <= 180
    links = re.findall(r"\]\(([^)#]+)\)", README)
    named = re.findall(r"`((?:docs|tools|configs|notebooks|mmpiqa_jax)/[\w./-]+)`", README)
    local = [p for p in links + named if "://" not in p]
    assert {"LICENSE", "docs/method.md", "docs/datasets.md", "docs/checkpoints.md",
            "docs/scaling.md"} <= set(local)
    assert [p for p in local if not (REPO / p).exists()] == []
    assert (REPO / "CITATION.cff").is_file()


def test_every_command_parses_and_its_config_loads():
    assert {c.split()[1] for c in README_COMMANDS} >= {"demo", "convert", "score", "prepare",
                                                       "sweep"}
    parser = cli.build_parser()
    for command in README_COMMANDS:
        args = parser.parse_args(shlex.split(command)[1:])  # exits on an unknown option
        if getattr(args, "config", None):
            config_lib.load_config(str(REPO / args.config))
    table = set(re.findall(r"^\| `mmpiqa (\w+)", README, re.M))
    assert table == set(cli.COMMANDS)  # one row per command, and every command has one


def test_scoring_with_a_released_liqe_model_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("torch")  # pyiqa's file is a torch pickle
    # LIQE's released model in pyiqa's format, small: tiny towers on ViT-B/32's image geometry.
    monkeypatch.setitem(clip_model.VARIANTS, "readme-test", dataclasses.replace(
        clip_model.VARIANTS["tiny"], image_resolution=224, vision_patch_size=32))
    config = config_lib.load_config(str(REPO / "configs" / "tiny.py:model=liqe,ctx=0"),
                                    ["model.variant=readme-test", "data.crop_size=224"])
    inference.save_model(perturb(iqa.build_model(config.model, nnx.Rngs(0))), config,
                         tmp_path / "made")
    home = tmp_path / "home"
    home.mkdir()
    assert cli.main(["export", str(tmp_path / "made"), "--to", "pyiqa", "--out",
                     str(home / "liqe_mix.pt")]) == 0
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    rng = np.random.default_rng(0)
    (home / "photos").mkdir()
    for name in ("photos/1.png", "photos/2.jpg", "photo.jpg", "a.jpg", "b.png"):
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), np.uint8)).save(home / name)

    section = README.split("## Score your images")[1].split("\n## ")[0]
    for command in commands(bash_blocks(section)[0]):
        argv = [os.path.expanduser(a) for a in shlex.split(command)[1:]]  # as the shell does
        assert cli.main(argv) == 0, command
    rows = (home / "scores.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("path")

    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    batch = rng.integers(0, 256, (2, 240, 320, 3), np.uint8)
    exec(compile(code, "README.md", "exec"), {"uint8_batch": batch})  # pylint: disable=exec-used
