"""`notebooks/quickstart.ipynb` runs top to bottom (nbclient), makes what it promises, and leaves
the repository as it was."""
import json
import os
import sys
import time
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")
# The notebook builds its CLIP checkpoint from transformers' torch model.
pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
CELL_TIMEOUT_S = 300
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ipynb_checkpoints"}


def repo_files() -> set[str]:
    found = set()
    for root, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        found.update(os.path.relpath(os.path.join(root, n), REPO) for n in names)
    return found


def stdout_of(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run in a kernel of this interpreter, from the repository root, writing to a
    temporary folder: (notebook, that folder, repo files before, seconds)."""
    work = tmp_path_factory.mktemp("quickstart")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {
        # The kernel spec "python3" runs `python` from PATH: make it this interpreter.
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
        # The package is importable whether installed or not.
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "MMPIQA_QUICKSTART_DIR": str(work),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    before = repo_files()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    start = time.time()
    try:
        client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                         resources={"metadata": {"path": str(REPO)}})
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb, work, before, time.time() - start


@pytest.mark.slow
def test_notebook_runs_and_makes_its_artefacts(executed):
    nb, work, _, seconds = executed
    print(f"quickstart notebook: {seconds:.0f} s")
    last_code = [c for c in nb.cells if c.cell_type == "code"][-1]
    summary = json.loads(stdout_of(last_code).strip().splitlines()[-1])
    assert -1 <= summary["srcc"] <= 1
    assert summary["scored"] == 6
    assert set(summary["sweep_srcc"]) == {"0", "2"}
    assert all(-1 <= v <= 1 for v in summary["sweep_srcc"].values())
    assert Path(summary["work"]) == work

    assert (work / "clip_tiny" / "config.json").is_file()
    assert (work / "train" / "train_log.jsonl").stat().st_size > 0
    for ext in ("json", "csv", "png"):
        assert (work / "train" / "eval" / f"synthetic_iqa_small-test.{ext}").stat().st_size > 0
    assert (work / "scores.csv").read_text().startswith("path,score\n")
    assert (work / "sweep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert (work / "sweep" / "sweep.md").is_file()
    # Plots were drawn: the images, the loss, the scatter, the sweep.
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs)
    assert images >= 4


@pytest.mark.slow
def test_notebook_leaves_the_repository_clean(executed):
    _, _, before, _ = executed
    assert repo_files() - before == set()
