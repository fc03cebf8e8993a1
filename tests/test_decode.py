"""`transforms.decode_array`: libspng for 8-bit RGB PNGs, pillow for the rest, the same pixels.

The references are other decoders of files other writers made: pillow (its own inflate and
unfiltering) and, where installed, OpenCV (libpng); pypng writes the interlaced file, which
pillow cannot write.
"""
import io
import zlib

import grain
import numpy as np
import png  # pypng
import pytest
from PIL import Image

from mmpiqa_jax.data import transforms as T


def _photo(h=96, w=128, seed=0) -> np.ndarray:
    """Smooth gradients plus noise, so that PNG's filters all get used."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _pypng(pixels: np.ndarray, interlace: bool = False) -> bytes:
    """An RGB PNG written by pypng, 8- or 16-bit by the array's dtype."""
    buffer = io.BytesIO()
    h, w = pixels.shape[:2]
    png.Writer(w, h, greyscale=False, bitdepth=8 * pixels.itemsize, interlace=interlace).write(
        buffer, pixels.reshape(h, w * 3).tolist())
    return buffer.getvalue()


def _files() -> dict:
    """name -> (encoded bytes, whether it is an 8-bit RGB PNG)."""
    pixels = _photo()
    rgb = Image.fromarray(pixels)
    with_trns = rgb.copy()
    with_trns.info["transparency"] = tuple(int(v) for v in pixels[0, 0])
    return {
        "rgb8": (_encode(rgb, "PNG"), True),
        "rgb8 best compression": (_encode(rgb, "PNG", compress_level=9), True),
        "rgb8 stored (level 0)": (_encode(rgb, "PNG", compress_level=0), True),
        "rgb8 (pypng)": (_pypng(pixels), True),
        "rgb8 interlaced (pypng)": (_pypng(pixels, interlace=True), True),
        "rgb8 with tRNS": (_encode(with_trns, "PNG", transparency=with_trns.info["transparency"]),
                           True),
        "grey": (_encode(rgb.convert("L"), "PNG"), False),
        "palette": (_encode(rgb.quantize(64), "PNG"), False),
        "rgba": (_encode(rgb.convert("RGBA"), "PNG"), False),
        "rgb 16-bit (pypng)": (_pypng(pixels.astype(np.uint16) * 257 + 3), False),
        "jpeg": (_encode(rgb, "JPEG", quality=90), False),
        "bmp": (_encode(rgb, "BMP"), False),
    }


@pytest.fixture
def libspng_calls(monkeypatch):
    """The sizes of the files `pyspng.load` decoded, as the test goes."""
    calls, load = [], T.pyspng.load
    monkeypatch.setattr(T.pyspng, "load", lambda b: calls.append(len(b)) or load(b))
    return calls


@pytest.mark.parametrize("name", list(_files()))
def test_decode_array_gives_pillows_pixels(name, libspng_calls):
    data, fast = _files()[name]
    assert T.is_rgb8_png(data) is fast
    want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    for encoded in (data, memoryview(data), bytearray(data)):
        got = T.decode_array(encoded)
        assert got.dtype == np.uint8 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert libspng_calls == ([len(data)] * 3 if fast else [])   # libspng exactly where it fits
    np.testing.assert_array_equal(T.decode_array(data, libspng=False), want)
    np.testing.assert_array_equal(got, np.asarray(T.decode_rgb(data)))


def test_rgb8_png_is_libspngs_and_equals_opencv(libspng_calls):
    cv2 = pytest.importorskip("cv2")
    data, _ = _files()["rgb8 interlaced (pypng)"]
    got = T.decode_array(data)
    assert libspng_calls == [len(data)]   # the fast path was the one taken
    opencv = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                          cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(got, opencv)
    np.testing.assert_array_equal(got, _photo())


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_png_fails_as_pillow_does(cut):
    data, _ = _files()["rgb8"]
    broken = data[:int(len(data) * cut)]
    with pytest.raises(OSError):
        np.asarray(T.decode_rgb(broken))
    with pytest.raises(OSError, match="truncated PNG: its b'IDAT' chunk at byte 33"):
        T.decode_array(broken)


def test_bad_zlib_data_under_a_valid_crc_fails_as_pillow_does():
    """A damaged deflate stream written with a correct CRC: libspng's own error, as OSError."""
    data, _ = _files()["rgb8"]
    idat = data.index(b"IDAT")   # the first IDAT chunk: length, type, zlib header ...
    length = int.from_bytes(data[idat - 4:idat], "big")
    payload = bytearray(data[idat + 4:idat + 4 + length])
    payload[0] ^= 0x0F           # the zlib header's compression method: invalid
    crc = zlib.crc32(b"IDAT" + payload).to_bytes(4, "big")
    damaged = data[:idat + 4] + bytes(payload) + crc + data[idat + 8 + length:]
    with pytest.raises(OSError):
        np.asarray(T.decode_rgb(damaged))
    with pytest.raises(OSError, match="cannot decode PNG"):
        T.decode_array(damaged)


def test_every_single_bit_error_fails_as_pillow_fails():
    """libspng as pyspng sets it up ignores CRCs and zlib's checksum: the chunks' CRCs are
    checked first, so a damaged file fails instead of giving wrong pixels."""
    data, _ = _files()["rgb8"]
    rng = np.random.default_rng(0)
    for position in rng.choice(len(data), 200, replace=False):
        damaged = bytearray(data)
        damaged[position] ^= 1 << int(rng.integers(8))
        with pytest.raises(OSError):
            T.decode_array(bytes(damaged))


def test_an_image_above_pillows_pixel_limit_goes_to_pillow(monkeypatch, libspng_calls):
    data, _ = _files()["rgb8"]                      # 128 x 96
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 128 * 96 // 4)
    with pytest.raises(Image.DecompressionBombError):
        T.decode_array(data)
    assert libspng_calls == []


@pytest.mark.parametrize("workers,threads,libspng", [(0, 4, False), (0, 1, True), (1, 2, True)])
def test_threads_of_one_process_decode_with_pillow(synthetic_small_spec, libspng_calls,
                                                   workers, threads, libspng):
    """libspng holds the GIL: evaluation's threads decode PNGs with pillow, workers and a
    single thread with libspng; the batches are the same."""
    from mmpiqa_jax.data import pipeline
    spec = pipeline.DataSpec(synthetic_small_spec.source, np.arange(8), batch_size=4)
    batches = list(pipeline.eval_iterator(spec, batch_size=4, crop_mode="center",
                                          num_workers=workers, num_threads=threads,
                                          shard=grain.sharding.NoSharding()))
    if workers == 0:  # the worker's calls are in its own process
        assert bool(libspng_calls) is libspng
    pngs = [T.is_rgb8_png(synthetic_small_spec.source[i]["image"]) for i in range(8)]
    assert any(pngs)
    for b, batch in enumerate(batches):
        for j, index in enumerate(batch["index"]):
            image = T.decode_rgb(synthetic_small_spec.source[int(index)]["image"])
            want = T.eval_crops(image, "center")   # pillow's decode
            np.testing.assert_array_equal(batch["pixels"][j], want, err_msg=f"{b}, {j}")


def test_array_and_pil_images_give_the_same_crops():
    """The pipeline works on arrays, `mmpiqa score` on PIL images: the same resize and crops."""
    for size in [(300, 200), (512, 384), (1600, 1000)]:   # enlarged, as is, shrunk
        pixels = np.asarray(Image.fromarray(_photo(64, 96)).resize(size, Image.BILINEAR))
        pil = Image.fromarray(pixels)
        resized = T.liqe_resize(pixels)
        assert isinstance(resized, np.ndarray)
        np.testing.assert_array_equal(resized, np.asarray(T.liqe_resize(pil)))
        for mode in T.EVAL_CROP_MODES:
            if mode == "pyiqa" and min(size) < T.CROP:
                continue
            np.testing.assert_array_equal(T.eval_crops(pixels, mode), T.eval_crops(pil, mode))


def test_mirrored_crops_are_windows_of_the_flipped_image():
    image = _photo(300, 400, seed=3)
    rng = np.random.default_rng(0)
    for mode in ("grid", "random"):
        pos = T.random_positions(300, 400, 6, rng, 224, mode)
        got = T.take_crops(image, pos, mirror=True)
        flipped = image[:, ::-1]
        want = np.stack([flipped[t:t + 224, l:l + 224] for t, l in pos])
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("greyscale", [True, False])
def test_16_bit_pngs_keep_their_high_byte_as_opencv_and_scikit_image_read_them(greyscale,
                                                                                 tmp_path):
    """Pillow's own conversion of 16-bit grey (mode I;16) clips it to white; the pixels must
    be what OpenCV and scikit-image read, for scoring and for the stored datasets alike."""
    cv2 = pytest.importorskip("cv2")
    from skimage.util import img_as_ubyte

    from mmpiqa_jax.data.builders import base
    from mmpiqa_jax.data.features import iqa_features

    h, w = 24, 40
    wide = np.random.default_rng(1).integers(0, 65536, (h, w) if greyscale else (h, w, 3),
                                             dtype=np.uint16)
    buffer = io.BytesIO()
    png.Writer(w, h, greyscale=greyscale, bitdepth=16).write(buffer, wide.reshape(h, -1).tolist())
    data = buffer.getvalue()
    want = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)
    expected = img_as_ubyte(wide)
    np.testing.assert_array_equal(want, expected[..., None].repeat(3, -1) if greyscale
                                  else expected)
    assert want.std() > 40  # not clipped: as varied as the 16-bit values
    np.testing.assert_array_equal(T.decode_array(data), want)
    (tmp_path / "wide.png").write_bytes(data)
    stored = iqa_features()["image"].decode_example_np(base.encode_image(tmp_path / "wide.png"))
    np.testing.assert_array_equal(stored, want)
