"""Parameter groups: `(regex, lr multiplier or None)` pairs over '/'-joined parameter paths.

A regex must match the whole path, and every parameter exactly one group. `None` freezes a
group: `split_trainable` splits its parameters off before differentiation.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from flax import nnx

from mmpiqa_jax.errors import UserError

PRESETS: dict[str, tuple[tuple[str, float | None], ...]] = {
    # MP-IQE's default: prompts, fusion encoder and heads train; CLIP is frozen.
    "prompt": ((r"clip/.*", None), (r"(prompts|fusion)/.*", 1.0)),
    # LIQE: everything trains except CLIP's temperature.
    "full": ((r"clip/logit_scale", None), (r"(?!clip/logit_scale$).*", 1.0)),
}


@dataclasses.dataclass(frozen=True)
class Group:
    regex: str
    lr_mult: float | None  # None: frozen

    @property
    def trainable(self) -> bool:
        return self.lr_mult is not None


def path_str(path: Sequence) -> str:
    return "/".join(str(p) for p in path)


def resolve(spec) -> tuple[Group, ...]:
    """Groups from a preset name or from `(regex, lr multiplier or None)` pairs."""
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise UserError(f"unknown optimizer.param_groups preset {spec!r}; "
                            f"known: {sorted(PRESETS)}")
        spec = PRESETS[spec]
    groups = []
    for item in spec:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise UserError(f"param group {item!r} is not a (regex, lr multiplier or None) pair")
        regex, mult = item
        try:
            re.compile(regex)
        except re.error as e:
            raise UserError(f"param group regex {regex!r} is invalid: {e}") from None
        if mult is not None and (isinstance(mult, bool) or not isinstance(mult, (int, float))
                                 or mult < 0):
            raise UserError(f"param group {regex!r}: lr multiplier must be a number >= 0 or None, "
                            f"got {mult!r}")
        groups.append(Group(regex, None if mult is None else float(mult)))
    if not groups:
        raise UserError("optimizer.param_groups is empty")
    return tuple(groups)


class GroupMatcher:
    """Maps parameter paths to their group; raises naming a parameter in no or several groups."""

    def __init__(self, groups: Sequence[Group]):
        self.groups = tuple(groups)
        self._compiled = [re.compile(g.regex) for g in self.groups]

    def index(self, path: Sequence) -> int:
        name = path_str(path)
        hits = [i for i, r in enumerate(self._compiled) if r.fullmatch(name)]
        if len(hits) != 1:
            which = "no group" if not hits else "several groups " + ", ".join(
                repr(self.groups[i].regex) for i in hits)
            raise UserError(f"parameter {name!r} matches {which}; each parameter must match "
                            f"exactly one of {[g.regex for g in self.groups]}")
        return hits[0]

    def group(self, path: Sequence) -> Group:
        return self.groups[self.index(path)]

    def trainable_filter(self):
        """An nnx filter: the parameters of trainable groups."""
        return nnx.All(nnx.Param, lambda path, _: self.group(path).trainable)

def _params(model_or_state) -> nnx.State:
    if isinstance(model_or_state, nnx.State):
        return model_or_state.filter(nnx.Param)
    return nnx.state(model_or_state, nnx.Param)


def split_trainable(model, groups: Sequence[Group]):
    """`(graphdef, trainable, frozen)`; frozen: frozen params and everything else (caches)."""
    return nnx.split(model, GroupMatcher(groups).trainable_filter(), ...)


def labels_tree(trainable: nnx.State, groups: Sequence[Group]) -> nnx.State:
    """The trainable state with each leaf replaced by its group label `"g{index}"` (for optax)."""
    matcher = GroupMatcher(groups)
    return nnx.map_state(lambda path, _: f"g{matcher.index(path)}", trainable)


@dataclasses.dataclass(frozen=True)
class GroupCount:
    regex: str
    lr_mult: float | None
    tensors: int
    total: int
    trainable: int


def count(model_or_state, groups: Sequence[Group]) -> list[GroupCount]:
    """Per group: tensors, parameters and trainable parameters (of an abstract state too)."""
    matcher = GroupMatcher(groups)
    tensors = [0] * len(matcher.groups)
    sizes = [0] * len(matcher.groups)
    for path, value in nnx.to_flat_state(_params(model_or_state)):
        i = matcher.index(path)
        tensors[i] += 1
        sizes[i] += int(value.size)
    return [GroupCount(g.regex, g.lr_mult, n, s, s if g.trainable else 0)
            for g, n, s in zip(matcher.groups, tensors, sizes)]


def format_counts(counts: Sequence[GroupCount]) -> str:
    """A small table of `count`'s rows plus a total line."""
    rows = [("group (regex)", "lr x", "tensors", "params", "trainable")]
    for c in counts:
        rows.append((c.regex, "frozen" if c.lr_mult is None else f"{c.lr_mult:g}", str(c.tensors),
                     f"{c.total:,}", f"{c.trainable:,}"))
    rows.append(("total", "", str(sum(c.tensors for c in counts)),
                 f"{sum(c.total for c in counts):,}", f"{sum(c.trainable for c in counts):,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(f"{v:<{w}}" if i == 0 else f"{v:>{w}}" for i, (v, w)
                               in enumerate(zip(r, widths))) for r in rows)
