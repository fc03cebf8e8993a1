"""The parts of `tools/benchmark.py` (JAX against the PyTorch reference):

    plans         what a run measures (sizes, repeats, dtype), each model's config and weights
    timing        medians of timed runs, matmul peaks, the training timer and the depth sweep
    memory        /proc readings: resident set, its high-water mark and its reset
    check         the reference check (before timing) and the first-timed-step check
    jax_worker    the JAX worker: train step (built by `train.state.training_setup`), inference
    torch_worker  the torch worker on `tools/torch_reference.py`
    protocol      one worker per subprocess, its result as JSON on the last line of stdout
    report        the markdown report, rendered from the saved JSON figures only

Nothing here imports torch at module level: the JAX workers run (and are measured) without it.
"""
