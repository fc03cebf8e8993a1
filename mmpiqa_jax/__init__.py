"""mmpiqa-jax: multi-modal prompt learning (MP-IQE) and LIQE for blind image quality assessment.

`create_metric` (`mmpiqa_jax.metric`) is imported on first use, keeping the package import light.
"""

__version__ = "0.1.0"

_LAZY = {"create_metric": "mmpiqa_jax.metric"}  # tests/test_layering.py allows exactly this


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmpiqa_jax' has no attribute {name!r}")
