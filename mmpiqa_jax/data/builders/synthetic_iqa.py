"""`synthetic_iqa`: the embedded default dataset, built offline from packaged photographs.

The 17 photographs shipped inside the scikit-image and matplotlib wheels, cropped to 384 x 288,
distorted by 12 types at 5 increasing levels (colour-only types skipped for grey ones): 17
references (level 0, MOS 5) + 196 x 5 = 997 images, labelled with a pseudo-MOS (SSIM against
the reference mapped linearly to [1, 5]). Every build writes the same bytes.
"""
import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.ndimage as ndi
import skimage.data
import tensorflow_datasets as tfds
from PIL import Image
from skimage.metrics import structural_similarity

from mmpiqa_jax import labels
from mmpiqa_jax.data import transforms
from mmpiqa_jax.data.features import FULL_SPLIT, DeterministicBuilder, iqa_example, iqa_features
from mmpiqa_jax.errors import UserError

IMAGE_SIZE = (384, 288)  # width, height
LEVELS = 5
_SEED = 20240626


# ------------------------------------------------------------------------------------------------
# References: name, loader, scene words (LIQE's vocabulary, up to 3), vertical crop anchor.

@dataclasses.dataclass(frozen=True)
class Reference:
    name: str
    load: Callable[[], np.ndarray]
    scenes: tuple[str, ...]
    anchor: float = 0.5  # where the crop sits along the cut axis: 0 top/left, 1 bottom/right
    grey: bool = False   # a grey photograph: colour-only distortions are skipped

REFERENCES = (
    Reference("astronaut", skimage.data.astronaut, ("human", "indoor"), anchor=0.2),
    Reference("camera", skimage.data.camera, ("human", "landscape"), anchor=0.3, grey=True),
    Reference("chelsea", skimage.data.chelsea, ("animal", "indoor")),
    Reference("coffee", skimage.data.coffee, ("still_life", "indoor")),
    Reference("rocket", skimage.data.rocket, ("cityscape", "others")),
    Reference("motorcycle", lambda: skimage.data.stereo_motorcycle()[0], ("still_life", "indoor")),
    Reference("moon", skimage.data.moon, ("landscape", "night"), grey=True),
    Reference("brick", skimage.data.brick, ("cityscape", "others"), grey=True),
    Reference("grass", skimage.data.grass, ("plant", "landscape"), grey=True),
    Reference("gravel", skimage.data.gravel, ("landscape", "others"), grey=True),
    Reference("coins", skimage.data.coins, ("still_life", "others"), grey=True),
    Reference("hubble", skimage.data.hubble_deep_field, ("night", "others")),
    Reference("ihc", skimage.data.immunohistochemistry, ("others",)),
    Reference("retina", skimage.data.retina, ("others",)),
    Reference("page", skimage.data.page, ("indoor", "others"), grey=True),
    Reference("text", skimage.data.text, ("still_life", "others"), grey=True),
    Reference("hopper", lambda: _matplotlib_sample("grace_hopper.jpg"), ("human",), anchor=0.3),
)


def _matplotlib_sample(name: str) -> np.ndarray:
    """A photograph of matplotlib's packaged sample data (no download: `mpl-data/sample_data`)."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    path = Path(matplotlib.get_data_path()) / "sample_data" / name
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def load_reference(ref: Reference, size=IMAGE_SIZE) -> np.ndarray:
    """The reference as uint8 RGB [h, w, 3]: resized to cover `size`, then cropped at the anchor."""
    image = np.asarray(ref.load())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    pil = Image.fromarray(np.ascontiguousarray(image[..., :3].astype(np.uint8)))
    w, h = size
    scale = max(w / pil.width, h / pil.height)
    rw, rh = max(w, round(pil.width * scale)), max(h, round(pil.height * scale))
    pil = pil.resize((rw, rh), Image.BICUBIC)
    left, top = round((rw - w) * ref.anchor), round((rh - h) * ref.anchor)
    return np.asarray(pil.crop((left, top, left + w, top + h)))


# ------------------------------------------------------------------------------------------------
# Distortions: each maps (uint8 image, strength, rng) -> uint8 image. Strengths are per level.

def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _gaussian_blur(x, sigma, rng):
    return _to_uint8(ndi.gaussian_filter(x.astype(np.float32), (sigma, sigma, 0), mode="reflect"))


def _motion_blur(x, length, rng):
    # A horizontal box kernel: a camera moving sideways during the exposure.
    return _to_uint8(ndi.uniform_filter1d(x.astype(np.float32), int(length), axis=1,
                                          mode="reflect"))


def _white_noise(x, std, rng):
    return _to_uint8(x + rng.standard_normal(x.shape, dtype=np.float32) * std)


def _impulse_noise(x, density, rng):
    hit = rng.random(x.shape[:2]) < density
    salt = rng.random(x.shape[:2]) < 0.5
    out = x.copy()
    out[hit & salt] = 255
    out[hit & ~salt] = 0
    return out


def _encode_decode(x, fmt, **options):
    return transforms.decode_array(transforms.encode(Image.fromarray(x), fmt, **options))


def _jpeg(x, quality, rng):
    return _encode_decode(x, "JPEG", quality=int(quality), optimize=False)


def _jpeg2000(x, ratio, rng):
    return _encode_decode(x, "JPEG2000", quality_mode="rates", quality_layers=[float(ratio)],
                          irreversible=True)


def _contrast_change(x, alpha, rng):
    # Blend toward the image's mean grey: the contrast falls, the mean stays.
    x = x.astype(np.float32)
    return _to_uint8(x.mean() + alpha * (x - x.mean()))


def _brighten(x, gamma, rng):
    return _to_uint8(255.0 * (x / 255.0) ** (1.0 / gamma))


def _darken(x, gamma, rng):
    return _to_uint8(255.0 * (x / 255.0) ** gamma)


def _color_saturation(x, keep, rng):
    x = x.astype(np.float32)
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    return _to_uint8(grey[..., None] + keep * (x - grey[..., None]))


def _pixelate(x, factor, rng):
    h, w = x.shape[:2]
    small = Image.fromarray(x).resize((max(1, w // factor), max(1, h // factor)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.NEAREST))


def _quantization(x, steps, rng):
    # Uniform quantisation of each channel to `steps` levels over the channel's own range, so that
    # dark or low-contrast photographs (the moon) lose detail level by level too.
    x = x.astype(np.float32)
    lo, hi = x.min(axis=(0, 1)), x.max(axis=(0, 1))
    q = np.maximum(hi - lo, 1.0) / (steps - 1)
    return _to_uint8(lo + np.rint((x - lo) / q) * q)


@dataclasses.dataclass(frozen=True)
class Distortion:
    name: str
    distortion_class: str  # one of labels.DISTORTIONS
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    strengths: tuple[float, ...]  # one per level, strictly stronger with the level
    colour_only: bool = False


DISTORTIONS = (
    Distortion("gaussian_blur", "blur", _gaussian_blur, (0.6, 1.2, 2.0, 3.2, 5.0)),
    Distortion("motion_blur", "blur", _motion_blur, (3, 5, 8, 12, 17)),
    Distortion("white_noise", "noise", _white_noise, (4.0, 8.0, 14.0, 22.0, 35.0)),
    Distortion("impulse_noise", "noise", _impulse_noise, (0.005, 0.015, 0.035, 0.07, 0.13)),
    Distortion("jpeg", "jpeg compression", _jpeg, (40, 20, 10, 5, 2)),
    Distortion("jpeg2000", "jpeg2000 compression", _jpeg2000, (16, 40, 90, 180, 360)),
    Distortion("contrast_change", "contrast", _contrast_change, (0.8, 0.62, 0.46, 0.32, 0.2)),
    Distortion("brighten", "overexposure", _brighten, (1.25, 1.6, 2.1, 2.8, 3.8)),
    Distortion("darken", "underexposure", _darken, (1.3, 1.7, 2.3, 3.1, 4.2)),
    Distortion("color_saturation", "color", _color_saturation, (0.7, 0.45, 0.25, 0.1, 0.0),
               colour_only=True),
    Distortion("pixelate", "spatial", _pixelate, (2, 3, 4, 6, 9)),
    Distortion("quantization", "quantization", _quantization, (24, 12, 7, 4, 3)),
)


def _by_name(items, names, what):
    table = {item.name: item for item in items}
    unknown = [n for n in names if n not in table]
    if unknown:
        raise UserError(f"synthetic_iqa: unknown {what} {unknown}; known: {sorted(table)}")
    return tuple(table[n] for n in names)


def distort(image: np.ndarray, distortion: Distortion, level: int,
            seed: tuple[int, ...]) -> np.ndarray:
    """`image` (uint8 RGB) distorted at `level` (1-based), with randomness from `seed` only."""
    if not 1 <= level <= len(distortion.strengths):
        raise UserError(f"synthetic_iqa: level {level} out of 1..{len(distortion.strengths)}")
    rng = np.random.default_rng([_SEED, *seed])
    return distortion.apply(image, distortion.strengths[level - 1], rng)


def pseudo_mos(reference: np.ndarray, distorted: np.ndarray) -> float:
    """SSIM against the reference (Gaussian window, sigma 1.5), mapped linearly to [1, 5]."""
    # float32 inputs keep skimage in float32.
    ssim = structural_similarity(reference.astype(np.float32), distorted.astype(np.float32),
                                 channel_axis=-1, data_range=255,
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    return float(1.0 + 4.0 * np.clip(ssim, 0.0, 1.0))


# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(kw_only=True)
class SyntheticIqaConfig(tfds.core.BuilderConfig):
    """Which references and distortions to build, and at what size (width, height)."""
    references: tuple[str, ...] = tuple(r.name for r in REFERENCES)
    distortions: tuple[str, ...] = tuple(d.name for d in DISTORTIONS)
    image_size: tuple[int, int] = IMAGE_SIZE


class SyntheticIqa(DeterministicBuilder):
    """Synthetic full-reference IQA set with a pseudo-MOS; needs nothing downloaded."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.",
                     "1.1.0": "17 references: the packaged photographs of scikit-image and "
                              "matplotlib (was 10)."}
    BUILDER_CONFIGS = [
        SyntheticIqaConfig(name="default", description="17 references x 12 types x 5 levels."),
        SyntheticIqaConfig(
            name="small",
            description="4 references x 4 types x 5 levels at 320 x 240, for quick runs.",
            references=("astronaut", "chelsea", "coffee", "rocket"),
            distortions=("gaussian_blur", "white_noise", "jpeg", "brighten"),
            image_size=(320, 240)),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=iqa_features(),
            # Keep generation order (references first, then by reference, type and level).
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(
                score_column="pseudo-MOS = 1 + 4 * SSIM against the reference",
                score_direction="higher is better",
                score_range=[1.0, 5.0],
                references=list(self.builder_config.references),
                scenes={r.name: list(r.scenes)
                        for r in _by_name(REFERENCES, self.builder_config.references, "reference")},
            ),
        )

    def _split_generators(self, dl_manager):
        return {FULL_SPLIT: self._generate_examples()}

    def _generate_examples(self):
        config = self.builder_config
        refs = _by_name(REFERENCES, config.references, "reference")
        dists = _by_name(DISTORTIONS, config.distortions, "distortion")
        key = 0
        for ref_id, ref in enumerate(refs):
            reference = load_reference(ref, config.image_size)
            yield key, iqa_example(_png(reference), f"refs/{ref.name}.png", 5.0, 1.0, ref_id)
            key += 1
        for ref_id, ref in enumerate(refs):
            reference = load_reference(ref, config.image_size)
            for dist in dists:
                if dist.colour_only and ref.grey:
                    continue
                # Seeded by the global indices, so a reference gets the same noise in every config.
                seed = (REFERENCES.index(ref), DISTORTIONS.index(dist))
                for level in range(1, LEVELS + 1):
                    image = distort(reference, dist, level, seed=(*seed, level))
                    mos = pseudo_mos(reference, image)
                    yield key, iqa_example(
                        _png(image), f"dist/{ref.name}.{dist.name}.{level}.png", mos,
                        (mos - 1.0) / 4.0, ref_id, distortion_type=dist.name,
                        distortion_class=labels.distortion_index(dist.distortion_class),
                        level=level)
                    key += 1


def _png(image: np.ndarray) -> bytes:
    """PNG bytes with fixed options, so that equal pixels give equal bytes."""
    return transforms.encode(Image.fromarray(image), "PNG", compress_level=6, optimize=False)


BUILDER = SyntheticIqa
