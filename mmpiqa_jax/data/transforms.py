"""Image ops of LIQE's preprocessing, on PIL images and numpy arrays (host side, per example).

Crops are (top, left) positions of `crop` x `crop` windows; images and crops are uint8 [h, w, 3]
(the models CLIP-normalise them, `models.preprocess`, with `CLIP_MEAN` and `CLIP_STD`).
"""
import io
import zlib

import numpy as np
import pyspng
from PIL import Image

from mmpiqa_jax.errors import UserError

CLIP_MEAN = np.array((0.48145466, 0.4578275, 0.40821073), np.float32)
CLIP_STD = np.array((0.26862954, 0.26130258, 0.27577711), np.float32)

CROP = 224
MAX_SHORT_SIDE = 768  # LIQE's AdaptiveResize(768)


# Pillow's modes of more than 8 bits per pixel: its convert("RGB") clips them to 255.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(pil: Image.Image) -> Image.Image:
    """`pil` as 8-bit RGB, fully decoded (a truncated file fails here); 16-bit grey keeps its
    high byte, as OpenCV and scikit-image read it; raises for floating-point images."""
    if pil.mode == "RGB":
        pil.load()   # what convert() would do, without its copy
        return pil
    if pil.mode in _WIDE_MODES:
        wide = np.clip(np.asarray(pil, np.int64), 0, 65535)
        return Image.fromarray((wide >> 8).astype(np.uint8)).convert("RGB")
    if pil.mode == "F":
        raise UserError("a floating-point image (pillow mode F), whose range is unknown: "
                        "save it as 8- or 16-bit")
    return pil.convert("RGB")


def decode_rgb(image) -> Image.Image:
    """Encoded bytes (PNG/JPEG/...) or a uint8 array as an RGB PIL image (`to_rgb`)."""
    if isinstance(image, (bytes, bytearray)):
        return to_rgb(Image.open(io.BytesIO(image)))
    return to_rgb(Image.fromarray(np.asarray(image)))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_rgb8_png(data) -> bool:
    """Whether encoded bytes are a PNG of 8-bit RGB pixels (no alpha, no palette)."""
    # The IHDR chunk comes first, with bit depth and colour type (2) at bytes 24 and 25.
    return (len(data) > 33 and data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR"
            and data[24] == 8 and data[25] == 2)


def _check_png_chunks(data: memoryview) -> None:
    """Raises OSError naming the first chunk of a PNG that is cut short or fails its CRC."""
    # pyspng has libspng ignore CRCs: a damaged file would decode to wrong pixels.
    pos, end = 8, len(data)
    while pos + 12 <= end:
        kind = bytes(data[pos + 4:pos + 8])
        stop = pos + 8 + int.from_bytes(data[pos:pos + 4], "big")
        if stop + 4 > end:
            raise OSError(f"truncated PNG: its {kind!r} chunk at byte {pos} ends past the "
                          f"file's {end} bytes")
        if zlib.crc32(data[pos + 4:stop]) != int.from_bytes(data[stop:stop + 4], "big"):
            raise OSError(f"corrupt PNG: its {kind!r} chunk at byte {pos} fails its CRC")
        if kind == b"IEND":
            return
        pos = stop + 4


def decode_array(image, libspng: bool = True) -> np.ndarray:
    """Encoded bytes (or a uint8 array) as `decode_rgb`'s pixels, uint8 [h, w, 3]: 8-bit RGB
    PNGs by libspng (after a check of their CRCs), unless `libspng` is False, the rest by pillow."""
    if isinstance(image, memoryview):
        image = image.tobytes()
    if libspng and isinstance(image, (bytes, bytearray)) and is_rgb8_png(image):
        width, height = int.from_bytes(image[16:20], "big"), int.from_bytes(image[20:24], "big")
        limit = Image.MAX_IMAGE_PIXELS
        if limit is None or width * height <= limit:
            _check_png_chunks(memoryview(image))
            try:
                return pyspng.load(bytes(image))
            except RuntimeError as e:  # libspng's error (truncated, corrupt), as pillow's type
                raise OSError(f"cannot decode PNG ({e})") from e
    return np.asarray(decode_rgb(image))


def liqe_resize(image, crop: int = CROP):
    """LIQE's AdaptiveResize: a short side above `MAX_SHORT_SIDE` shrinks to it, one below `crop`
    grows to `crop` (bicubic; LIQE asserts instead). Takes a PIL image or uint8 [h, w, 3] and
    returns the same kind (the same object when nothing changes)."""
    is_array = isinstance(image, np.ndarray)
    h, w = image.shape[:2] if is_array else image.size[::-1]
    short = min(w, h)
    if short > MAX_SHORT_SIDE:  # bilinear: torchvision's Resize default on PIL images
        target, resample = MAX_SHORT_SIDE, Image.BILINEAR
    elif short < crop:
        target, resample = crop, Image.BICUBIC
    else:
        return image
    # torchvision's Resize(int): the short side becomes `target`, the long one int(target * ratio).
    size = (target, int(target * h / w)) if w <= h else (int(target * w / h), target)
    if is_array:
        return np.asarray(Image.fromarray(image).resize(size, resample))
    return image.resize(size, resample)


def stored_bytes(data: bytes, *, resize: bool = False, uncompressed: bool = False) -> bytes:
    """An encoded image as `mmpiqa prepare` stores it, decoding to exactly the pixels that
    `decode_rgb` (then `liqe_resize`, with `resize`: `--liqe-resize`) gives of `data`: a 24-bit
    BMP with `uncompressed`, else the bytes as they are when nothing changes, or a PNG."""
    if not resize and not uncompressed:
        return bytes(data)
    image = decode_rgb(data)
    resized = liqe_resize(image) if resize else image
    if uncompressed:
        return encode(resized, "BMP")
    if resized is image:
        return bytes(data)
    return encode(resized, "PNG")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    """`image` encoded as `fmt` with pillow's `options`."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def grid_positions(height: int, width: int, crop: int = CROP,
                   stride: int | None = None) -> np.ndarray:
    """All (top, left) of the stride grid, row-major, as torch's `unfold` orders them. [n, 2].
    The stride is LIQE's unless given: 48 when a side is >= 1024 (after the resize), else 32."""
    if stride is None:
        stride = 48 if max(height, width) >= 1024 else 32
    tops = np.arange(0, height - crop + 1, stride)
    lefts = np.arange(0, width - crop + 1, stride)
    return np.stack(np.meshgrid(tops, lefts, indexing="ij"), -1).reshape(-1, 2)


def liqe_test_positions(height: int, width: int, num: int = 15, crop: int = CROP) -> np.ndarray:
    """LIQE's test crops, [num, 2]: grid positions 0, s, 2s, ... with s = n_grid // num; a grid
    of fewer than `num` (LIQE asserts) gives positions floor(i * n_grid / num), with repeats."""
    grid = grid_positions(height, width, crop)
    n = len(grid)
    return grid[(n // num) * np.arange(num) if n >= num else (np.arange(num) * n) // num]


PYIQA_STRIDE = 32  # pyiqa's LIQE: `step`, the same for every image size


def pyiqa_positions(height: int, width: int, num: int = 15, crop: int = CROP) -> np.ndarray:
    """pyiqa's LIQE test crops of an image as it is, [min(n, num), 2]: of the n grid positions,
    those at k * max(1, n // num); raises for a side below `crop` (pyiqa asserts)."""
    if height < crop or width < crop:
        raise UserError(f"pyiqa crops need both sides >= {crop} (pyiqa's LIQE does not resize), "
                        f"got {width}x{height}")
    grid = grid_positions(height, width, crop, PYIQA_STRIDE)
    n = len(grid)
    count = min(n, num)
    return grid[max(1, n // count) * np.arange(count)]


def center_position(height: int, width: int, crop: int = CROP) -> np.ndarray:
    """The centred crop, as one (top, left). [1, 2]."""
    return np.array([[(height - crop) // 2, (width - crop) // 2]])


def random_positions(height: int, width: int, num: int, rng: np.random.Generator,
                     crop: int = CROP, mode: str = "grid") -> np.ndarray:
    """`num` training crops, [num, 2]: grid positions with replacement (`grid`, LIQE's), or any
    positions (`random`; `pipeline.train_iterator` checks the mode)."""
    if mode == "grid":
        grid = grid_positions(height, width, crop)
        return grid[rng.integers(0, len(grid), size=num)]
    return np.stack([rng.integers(0, height - crop + 1, size=num),
                     rng.integers(0, width - crop + 1, size=num)], -1)


def take_crops(image: np.ndarray, positions: np.ndarray, crop: int = CROP,
               mirror: bool = False) -> np.ndarray:
    """The [n, crop, crop, c] windows at `positions` of an [h, w, c] image (or of it mirrored)."""
    if not mirror:
        return np.stack([image[t:t + crop, l:l + crop] for t, l in positions])
    # The flipped image's window at left l is the window at w - l - crop, reversed: only the
    # crops are flipped, each pixel moved as one c-byte item.
    w, c = image.shape[1], image.shape[-1]
    pixels = np.ascontiguousarray(image).view(np.dtype(f"V{c * image.itemsize}"))[..., 0]
    out = np.stack([pixels[t:t + crop, w - l - crop:w - l][:, ::-1] for t, l in positions])
    return out.view(image.dtype).reshape(*out.shape, c)


def random_rot90(crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each square crop of [n, s, s, c] turned by its own random multiple of 90 degrees."""
    turns = rng.integers(0, 4, size=len(crops))
    return np.stack([np.rot90(c, k) for c, k in zip(crops, turns)])


EVAL_CROP_MODES = ("liqe", "center", "full", "pyiqa")


def eval_crops(image, mode: str = "liqe", num: int = 15, crop: int = CROP) -> np.ndarray:
    """uint8 [n, crop, crop, 3] evaluation crops of an RGB image (PIL or uint8 [h, w, 3]): `liqe`
    (`num` grid crops after LIQE's resize), `center`, `full` (resized), `pyiqa` (<= num, as is)."""
    if mode not in EVAL_CROP_MODES:
        raise UserError(f"unknown eval crop mode {mode!r}; expected one of {EVAL_CROP_MODES}")
    if mode == "full":  # bicubic
        pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image
        return np.asarray(pil.resize((crop, crop), Image.BICUBIC))[None]
    if mode == "pyiqa":
        array = np.asarray(image)
        return take_crops(array, pyiqa_positions(*array.shape[:2], num, crop), crop)
    array = np.asarray(liqe_resize(image, crop=crop))
    h, w = array.shape[:2]
    pos = liqe_test_positions(h, w, num, crop) if mode == "liqe" else center_position(h, w, crop)
    return take_crops(array, pos, crop)
