"""mmpiqa-jax: multi-modal prompt learning (MP-IQE) and LIQE for blind image quality assessment."""

__version__ = "0.1.0"
