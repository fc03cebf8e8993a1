"""mmpiqa-jax: multi-modal prompt learning for blind image quality assessment, in JAX/Flax."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.10",
    "flax>=0.12",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "ml-collections>=1.0",
    "tensorflow-datasets>=4.9.9",  # read and written without TensorFlow (array_record)
    "importlib_resources",  # tfds 4.9.10 imports it on every Python (tensorflow/datasets#11212)
    "grain>=0.2.12",
    "array-record>=0.8",
    "transformers>=4.45",
    "ftfy>=6.1",  # OpenAI's text cleaning before byte-pair encoding
    "safetensors>=0.4",
    "numpy>=1.26",
    "scipy>=1.11",
    "pillow>=10.0",
    "pyspng>=0.1.4",  # libspng: 8-bit RGB PNGs decoded 1.7x faster than pillow, same pixels
    "scikit-image>=0.22",
    "openpyxl>=3.1",   # .xlsx score files (CSIQ, BID, SPAQ)
    "xlrd>=2.0",       # .xls score files (BID copies)
    "matplotlib>=3.8",
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    "tqdm>=4.66",
]

# Tests that need no PyTorch.
TEST_CORE = [
    "pytest>=8",
    "pytest-xdist>=3.8",  # -n 2 --dist loadfile --no-loadscope-reorder (README)
    "xlwt>=1.3",  # writes the real .xls format for the BID fixture
    "pandas>=2.0",  # reads back the per-image CSVs in tests
    "pypng>=0.20220715",  # writes the interlaced PNG that the decoder tests read
    "ftfy>=6.1",
    "nbclient>=0.10",
    "nbformat>=5.9",
    "ipykernel>=6.29",
]

EXTRAS = {
    # Parity tests against the PyTorch references; torch is never used by the model.
    # Versions that install here: see DEVELOPERS.md.
    "test": TEST_CORE + [
        "torch>=2.4",
        "torchvision>=0.19",
        "open_clip_torch>=2.24",
        "opencv-python-headless>=4.8",  # pyiqa's LIQE (installed --no-deps, see README) needs it
    ],
    # The suite without the PyTorch references (their tests skip): the newest-Python CI env,
    # where pip has no local torch build and would download a CUDA one.
    "test-core": TEST_CORE,
    # The PyTorch module that exported models load (`mmpiqa_jax.pytorch`).
    "torch": ["torch>=2.4", "safetensors>=0.4", "numpy>=1.26", "pillow>=10.0"],
    # Accelerators: install the matching jax build on top, see README.
    "cuda": ["jax[cuda12]>=0.10"],
    "tpu": ["jax[tpu]>=0.10"],
}

setup(
    name="mmpiqa-jax",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE", "mmpiqa_jax/assets/LICENSE-openai-clip.txt"],
    python_requires=">=3.11",  # jax >= 0.10, grain and orbax need 3.11
    packages=find_packages(include=["mmpiqa_jax", "mmpiqa_jax.*"]),
    package_data={"mmpiqa_jax": ["assets/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["mmpiqa=mmpiqa_jax.cli.main:main"]},
)
