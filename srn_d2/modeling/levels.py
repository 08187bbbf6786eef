"""Which pyramid level takes which of SRN's two steps: one plan shared by the
backbone, the head and the meta-architecture."""

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch

from ..errors import require

# Levels, finest first (strides 4 .. 128), as the MODEL.SRN.*_LEVELS keys spell them.
SRN_LEVELS = ("p2", "p3", "p4", "p5", "p6", "p7")


@dataclass(frozen=True)
class LevelPlan:
    """The levels of SRN's pyramid and the ones that take two steps.

    Every level is detected from its P-feature ("p3") in step 2. A level of
    ``stc_levels`` is also classified in step 1, and one of ``str_levels`` also
    regressed in step 1, both from its C-feature ("c3"). Levels are kept in
    pyramid order, finest first.
    """

    levels: Tuple[str, ...] = SRN_LEVELS
    stc_levels: Tuple[str, ...] = ("p2", "p3", "p4")
    str_levels: Tuple[str, ...] = ("p5", "p6", "p7")

    def __post_init__(self):
        for key, names in (
            ("MODEL.SRN.STC_LEVELS", self.stc_levels),
            ("MODEL.SRN.STR_LEVELS", self.str_levels),
        ):
            unknown = [n for n in names if n not in self.levels]
            require(
                not unknown,
                key,
                list(names),
                f"names {unknown}, which are not SRN levels {list(self.levels)}",
            )
            repeated = sorted({n for n in names if list(names).count(n) > 1})
            require(not repeated, key, list(names), f"names {repeated} more than once")
        # Pyramid order, whatever order the config lists them in.
        object.__setattr__(self, "stc_levels", self._in_order(self.stc_levels))
        object.__setattr__(self, "str_levels", self._in_order(self.str_levels))

    @classmethod
    def from_config(cls, cfg) -> "LevelPlan":
        return cls(
            stc_levels=tuple(cfg.MODEL.SRN.STC_LEVELS), str_levels=tuple(cfg.MODEL.SRN.STR_LEVELS)
        )

    def _in_order(self, names: Sequence[str]) -> Tuple[str, ...]:
        return tuple(level for level in self.levels if level in names)

    @property
    def step1_levels(self) -> Tuple[str, ...]:
        """Levels with any step-1 work: their C-features are computed."""
        return self._in_order(set(self.stc_levels) | set(self.str_levels))

    @staticmethod
    def step1_feature(level: str) -> str:
        """Name of a level's first-step (C-) feature: "p3" -> "c3"."""
        return "c" + level[1:]

    @staticmethod
    def stride(level: str) -> int:
        return 2 ** int(level[1:])

    @property
    def head_in_features(self) -> List[str]:
        """The features the head reads: the C-features of step 1, then every P-feature."""
        return [self.step1_feature(level) for level in self.step1_levels] + list(self.levels)


def split_levels(
    tensor: torch.Tensor, sizes: Dict[str, int], dim: int = 1
) -> Dict[str, torch.Tensor]:
    """A tensor laid out level after level along ``dim`` (``sizes[level]`` entries each), per level."""
    return dict(zip(sizes, tensor.split(list(sizes.values()), dim=dim)))


def cat_levels(
    per_level: Dict[str, torch.Tensor], levels: Sequence[str], dim: int = 1
) -> torch.Tensor:
    """The tensors of ``levels``, concatenated along ``dim`` in pyramid order."""
    return torch.cat([per_level[level] for level in levels], dim=dim)


def cat_levels_per_image(
    per_level: Dict[str, torch.Tensor], levels: Sequence[str], num_images: int
) -> torch.Tensor:
    """(N, R, 4): the (R_l, 4) or (N, R_l, 4) boxes of ``levels``, each image's row, concatenated."""
    return torch.cat([per_level[level].expand(num_images, -1, -1) for level in levels], dim=1)
