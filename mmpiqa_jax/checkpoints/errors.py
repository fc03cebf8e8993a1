"""The one error type of checkpoint reading and writing, and its messages."""
from collections.abc import Mapping

from mmpiqa_jax.errors import UserError


class CheckpointError(UserError):
    """A checkpoint that cannot be read or written; the message names the file and the tensor at
    fault."""


def listing(names, limit: int = 20) -> str:
    """`names` as a short, sorted, comma-separated list (the first `limit`, then how many more)."""
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def key_mismatch(missing, unexpected) -> str:
    """"missing keys (n): ...; unexpected keys (m): ..." for whichever of the two is non-empty."""
    parts = [f"{what} keys ({len(keys)}): {listing(keys)}"
             for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    return "; ".join(parts)


def check_shapes(expected: Mapping[str, tuple], found: Mapping[str, tuple], *, source: str,
                 what: str, names: Mapping[str, str] | None = None) -> None:
    """Raise `CheckpointError` unless `found` has `expected`'s keys, each with its shape. `what`
    says what a key mismatch means; `names` maps keys to the names a file gives them."""
    missing, unexpected = expected.keys() - found.keys(), found.keys() - expected.keys()
    if missing or unexpected:
        raise CheckpointError(f"{source}: {what}; " + key_mismatch(missing, unexpected))
    for key, shape in expected.items():
        if found[key] != shape:
            name = key if not names or names.get(key, key) == key else f"{names[key]} (-> {key})"
            raise CheckpointError(f"{source}: tensor {name} has shape {found[key]}, "
                                  f"expected {shape}")
