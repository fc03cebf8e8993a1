"""Shared fixtures: open_clip reference models built from our `CLIPConfig`s."""
import numpy as np
import pytest


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


@pytest.fixture(scope="session")
def synthetic_small_spec(synthetic_small_dir):
    """The pipeline's `DataSpec` of all of `synthetic_iqa/small`."""
    from mmpiqa_jax.data import pipeline

    return pipeline.open_spec("synthetic_iqa/small", data_dir=synthetic_small_dir)


# The modules whose tests take a minute or more here (`pytest --durations`): run first, so that
# under `pytest -n 2 --dist loadfile --no-loadscope-reorder` (the README's command: a module at a
# time to whichever worker is free, in this order) the two workers start on them and end on the
# many short modules, instead of one worker ending the run alone on a long one. Modules stay
# whole, so their module-scoped fixtures are built once.
LONG_MODULES = ("test_sharding.py", "test_sweep_packed.py", "test_notebook.py",
                "test_preemption.py", "test_distributed.py", "test_cli_train.py",
                "test_block_execution.py", "test_accumulation.py", "test_real_protocol.py",
                "test_run.py")


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept within
