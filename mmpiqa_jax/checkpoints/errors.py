"""The one error type of checkpoint reading and writing."""

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
