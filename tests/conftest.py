"""Shared fixtures, and one JAX compilation cache for the whole test session.

The cache is a temporary folder named by `JAX_COMPILATION_CACHE_DIR` before jax is imported, so
that every test, every xdist worker and every process a test starts reuses what another
compiled (a folder named there already is used as it is and kept). The summary at the end says
how many compilations it answered.
"""
import json
import os
import shutil
import tempfile

import numpy as np
import pytest

CACHE_VAR = "JAX_COMPILATION_CACHE_DIR"
OWN_CACHE = CACHE_VAR not in os.environ
if OWN_CACHE:
    os.environ[CACHE_VAR] = tempfile.mkdtemp(prefix="mmpiqa-tests-jax-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
CACHE_STATS = os.path.join(os.environ[CACHE_VAR], "stats")
_counts = {"/jax/compilation_cache/cache_hits": 0, "/jax/compilation_cache/cache_misses": 0}


def _count(event, **_):
    if event in _counts:
        _counts[event] += 1


def pytest_configure(config):  # pylint: disable=unused-argument
    import jax  # pylint: disable=import-outside-toplevel
    jax.monitoring.register_event_listener(_count)


def pytest_sessionfinish(session):  # pylint: disable=unused-argument
    os.makedirs(CACHE_STATS, exist_ok=True)
    with open(os.path.join(CACHE_STATS, f"{os.getpid()}.json"), "w", encoding="utf-8") as f:
        json.dump(list(_counts.values()), f)


def pytest_terminal_summary(terminalreporter):
    hits = misses = 0
    for name in os.listdir(CACHE_STATS) if os.path.isdir(CACHE_STATS) else ():
        with open(os.path.join(CACHE_STATS, name), encoding="utf-8") as f:
            h, m = json.load(f)
        hits, misses = hits + h, misses + m
    if hits + misses:
        terminalreporter.write_line(f"JAX compilation cache: {hits} of {hits + misses} compiles "
                                    f"answered from the cache ({os.environ[CACHE_VAR]})")


def pytest_unconfigure(config):
    if OWN_CACHE and not hasattr(config, "workerinput"):  # the xdist controller, or no xdist
        shutil.rmtree(os.environ[CACHE_VAR], ignore_errors=True)


def openclip_clip(config, seed: int = 0):
    """open_clip's QuickGELU `CLIP` shaped as `config`, seeded, with every parameter perturbed.

    The perturbation (seeded normal noise) keeps any weight from sitting at a value that hides
    a conversion mistake (LayerNorm at 1 and 0, zero biases). Returns (eval-mode torch model,
    its state dict as float32 numpy arrays in OpenAI layout).
    """
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(seed)
    vision = open_clip.model.CLIPVisionCfg(
        layers=config.vision_layers, width=config.vision_width,
        head_width=config.vision_width // config.vision_heads,
        patch_size=config.vision_patch_size, image_size=config.image_resolution)
    text = open_clip.model.CLIPTextCfg(
        context_length=config.context_length, vocab_size=config.vocab_size,
        width=config.text_width, heads=config.text_heads, layers=config.text_layers)
    model = open_clip.model.CLIP(config.embed_dim, vision, text, quick_gelu=True).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    state_dict = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    return model, state_dict


@pytest.fixture
def same_flags():
    """XLA's optimisations off, for a test that compares runs made under the same flags (it
    compiles in about half the time); back on after it. Processes a test starts get
    `SAME_FLAGS_ENV`."""
    import jax  # pylint: disable=import-outside-toplevel
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


SAME_FLAGS_ENV = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


@pytest.fixture(scope="session")
def make_openclip():
    return openclip_clip


@pytest.fixture(scope="session")
def synthetic_small_dir(tmp_path_factory):
    """A data dir holding `synthetic_iqa/small` (84 images), built once per session."""
    from mmpiqa_jax.data import registry

    path = str(tmp_path_factory.mktemp("synthetic_small"))
    registry.prepare("synthetic_iqa/small", data_dir=path)
    return path


# A tiny MP-IQE on synthetic_iqa/small: 8 steps, DWA epochs of 2 steps (its weights move from
# step 5), a checkpoint and a validation every 4 steps, one crop per image.
TINY = "configs/tiny.py:dataset=synthetic_iqa/small"
TINY_RUN = ["num_steps=8", "log_every=1", "eval_every=4", "checkpoint_every=4",
            "steps_per_epoch=2", "loss.dwa=True", "data.split=50/25/25",
            "data.crops_per_image=1", "data.eval_crops=2", "eval.batch_size=8"]


def tiny_config(data_dir, *more, spec=TINY):
    """`configs/tiny.py` on synthetic_iqa/small in `data_dir` with `TINY_RUN` and `more`."""
    from mmpiqa_jax import config as config_lib

    return config_lib.load_config(spec, [*TINY_RUN, f"data.data_dir={data_dir}", *more])


@pytest.fixture(scope="session")
def trained_run(synthetic_small_dir, tmp_path_factory):
    """`tiny_config` trained, validated and tested once per session: (workdir, results). Tests
    that write into a run copy it first."""
    from mmpiqa_jax.train import run

    workdir = tmp_path_factory.mktemp("trained_run")
    return workdir, run.train_and_evaluate(tiny_config(synthetic_small_dir), workdir)


@pytest.fixture(scope="session")
def synthetic_small_spec(synthetic_small_dir):
    """The pipeline's `DataSpec` of all of `synthetic_iqa/small`."""
    from mmpiqa_jax.data import pipeline

    return pipeline.open_spec("synthetic_iqa/small", data_dir=synthetic_small_dir)


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
    """The modules holding `integration` or `slow` tests first: under the README's
    `-n 2 --dist loadfile --no-loadscope-reorder` (modules whole, in this order, to whichever
    worker is free) the long modules start at once, and the many short ones fill in after."""
    long = {item.path for item in items
            if item.get_closest_marker("integration") or item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in long)  # stable: the order is kept within
