"""Input pipeline throughput, records to device arrays: the per-example pipeline against a PyTorch
DataLoader running LIQE's preprocessing.

Writes two temporary tfds datasets (array_record, as `mmpiqa prepare` writes real ones) from
scikit-image's photographs varied by seeded noise: 512 x 384 PNGs (KADID-10k-like) and
1024 x 768 JPEGs, quality 90 (KonIQ-10k-like), each also as `mmpiqa prepare --uncompressed`
stores it (the same pixels as BMP, `transforms.stored_bytes`). Each is read with LIQE's 3 random
training crops (batch 16, random flip) and with its 15 test crops (batch 16), by

  grain     `pipeline.train_iterator` / `eval_iterator`: per-example work in `host_workers()`
            processes (2 threads each), uint8 crops, `DevicePrefetch` putting batches on the
            device from a thread;
  torch     a `torch.utils.data.DataLoader` with one worker per core running LIQE's own
            preprocessing (PIL decode, AdaptiveResize(768), RandomHorizontalFlip, ToTensor,
            Normalize, `unfold` into the stride grid, crops picked), written after LIQE's
            `ImageDataset2` and `utils._preprocess3`; its batches put on the device too.

Figures: images/s (wall) and images per CPU-second of the whole process tree (the process and
its workers), which is the per-core rate when the cores are busy and is not changed by other
load on a shared machine. Scaling lines run the grain pipeline with 1 and 2 workers.

    python tools/benchmark_pipeline.py [--quick]
"""
import argparse
import datetime
import io
import os
import platform
import sys
import tempfile
import time

import grain
import numpy as np
import psutil
import tensorflow_datasets as tfds
from PIL import Image

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax  # noqa: E402  pylint: disable=wrong-import-position
from mmpiqa_jax.data import pipeline  # noqa: E402  pylint: disable=wrong-import-position
from mmpiqa_jax.data import transforms as T  # noqa: E402  pylint: disable=wrong-import-position
from mmpiqa_jax.data.builders import synthetic_iqa  # noqa: E402  pylint: disable=wrong-import-position
from mmpiqa_jax.data.features import FULL_SPLIT, iqa_features  # noqa: E402  pylint: disable=wrong-import-position
from mmpiqa_jax.data.prefetch import DevicePrefetch  # noqa: E402  pylint: disable=wrong-import-position
from mmpiqa_jax.evaluate.report import markdown_table  # noqa: E402  pylint: disable=wrong-import-position
from mmpiqa_jax.train import sharding  # noqa: E402  pylint: disable=wrong-import-position

ONE = grain.sharding.NoSharding()
BATCH = 16  # LIQE's per-step batch of KADID-10k and KonIQ-10k, and its test batch
CASES = {"kadid": ((512, 384), "PNG"), "koniq": ((1024, 768), "JPEG")}


class BenchImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """`num_images` images of `size` (width, height) in `fmt`, with random scores."""

    VERSION = tfds.core.Version("1.0.0")
    num_images, size, fmt, uncompressed = 48, (512, 384), "PNG", False

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=iqa_features(),
                                     metadata=tfds.core.MetadataDict())

    def _split_generators(self, dl_manager):
        return {FULL_SPLIT: self._generate_examples()}

    def _generate_examples(self):
        rng = np.random.default_rng(0)
        refs = [synthetic_iqa.load_reference(r, self.size) for r in synthetic_iqa.REFERENCES]
        for i in range(self.num_images):
            noisy = refs[i % len(refs)] + rng.normal(0, 3 + i % 7, refs[0].shape)
            buf = io.BytesIO()
            options = {"quality": 90} if self.fmt == "JPEG" else {}
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, self.fmt,
                                                                          **options)
            mos = float(rng.uniform(1, 5))
            image = T.stored_bytes(buf.getvalue(), uncompressed=self.uncompressed)
            yield i, {"image": image, "name": f"{i:05d}", "mos": mos,
                      "mos_std": np.nan, "quality": (mos - 1) / 4, "ref_id": i,
                      "distortion_type": "", "distortion_class": -1, "level": 0}


def make_source(tmp: str, case: str, num_images: int, uncompressed: bool = False):
    size, fmt = CASES[case]
    cls = type(f"Bench_{case}{'_bmp' if uncompressed else ''}", (BenchImages,),
               {"num_images": num_images, "size": size, "fmt": fmt, "uncompressed": uncompressed})
    builder = cls(data_dir=tmp, file_format="array_record")
    builder.download_and_prepare()
    return builder.as_data_source(split="all", decoders={"image": tfds.decode.SkipDecoding()})


# ------------------------------------------------------------------------------------------------
# The PyTorch peer: LIQE's ImageDataset2 with _preprocess3 (train) / _preprocess2 (test).

class LiqeDataset:
    """LIQE's per-image work on our records: decode, AdaptiveResize(768), flip (train),
    ToTensor + Normalize of the whole image, `unfold` into 224 patches, `num_patch` picked."""

    def __init__(self, source, num_patch: int, test: bool):
        import torchvision.transforms as tvt  # pylint: disable=import-outside-toplevel
        self.source, self.num_patch, self.test = source, num_patch, test
        steps = [lambda im: im.convert("RGB"), self.adaptive_resize]
        if not test:
            steps.append(tvt.RandomHorizontalFlip())
        steps += [tvt.ToTensor(), tvt.Normalize(tuple(T.CLIP_MEAN), tuple(T.CLIP_STD))]
        self.preprocess = tvt.Compose(steps)

    @staticmethod
    def adaptive_resize(image):
        import torchvision.transforms.functional as F  # pylint: disable=import-outside-toplevel
        w, h = image.size
        if h < 768 or w < 768:   # LIQE: only when both sides exceed the size
            return image
        return F.resize(image, 768, F.InterpolationMode.BILINEAR)

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        import torch  # pylint: disable=import-outside-toplevel
        record = self.source[index]
        image = self.preprocess(Image.open(io.BytesIO(record["image"])))[None]
        step = 48 if image.size(2) >= 1024 or image.size(3) >= 1024 else 32
        patches = image.unfold(2, 224, step).unfold(3, 224, step).permute(
            0, 2, 3, 1, 4, 5).reshape(-1, 3, 224, 224)
        if self.test:
            n = len(patches)
            sel = (n // self.num_patch) * torch.arange(self.num_patch) if n >= self.num_patch \
                else (torch.arange(self.num_patch) * n) // self.num_patch
        else:
            sel = torch.randint(0, len(patches), (self.num_patch,))
        return {"I": patches[sel], "mos": float(record["mos"])}


class _Endless:
    """A DataLoader's batches over and over (a new epoch when one ends), as host numpy."""

    def __init__(self, loader):
        self.loader, self.it = loader, iter(loader)

    def __iter__(self):
        return self

    def __next__(self):
        try:
            batch = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            batch = next(self.it)
        # NCHW float32 as LIQE's model takes it
        return {"pixels": batch["I"].numpy(), "mos": batch["mos"].numpy()}


def torch_iterator(source, crops: int, test: bool, workers: int):
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(1)
    dataset = LiqeDataset(source, crops, test)
    # One item read here first: workers forked from this process (JAX's and grain's threads
    # running) before it had decoded an image crashed on their first decode (SIGSEGV).
    dataset[0]  # pylint: disable=pointless-statement
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH,
                                         shuffle=not test, num_workers=workers,
                                         persistent_workers=workers > 0, prefetch_factor=2)
    return _Endless(loader)


# ------------------------------------------------------------------------------------------------
# Timing.

def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants."""
    me = psutil.Process()
    total = 0.0
    for p in [me] + me.children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(make, batches: int, warmup: int = 2) -> dict:
    """Takes `warmup` batches (start-up), then times `batches` more, each a device array."""
    it = make()
    for _ in range(warmup):
        jax.block_until_ready(next(it))
    cpu0, t0 = tree_cpu_seconds(), time.perf_counter()
    for _ in range(batches):
        jax.block_until_ready(next(it))
    wall, cpu = time.perf_counter() - t0, tree_cpu_seconds() - cpu0
    if hasattr(it, "close"):
        it.close()
    images = batches * BATCH
    return {"images_per_s": images / wall, "images_per_cpu_s": images / cpu, "cpu": cpu,
            "wall": wall}


class _PutInLoop:
    """The torch loader's loop: next host batch, then its global arrays, in the caller's
    thread."""

    def __init__(self, it, mesh):
        self.it, self.mesh = it, mesh

    def __next__(self):
        return sharding.global_batch(self.mesh, next(self.it))

    def close(self):
        if hasattr(self.it, "close"):
            self.it.close()


class _Closing(DevicePrefetch):
    """`DevicePrefetch` that also closes the pipeline it reads."""

    def close(self):
        super().close()
        if hasattr(self.iterator, "close"):
            self.iterator.close()


def methods(sources: dict, mode: str, mesh, workers: int):
    """name -> a function making an iterator of device batches, and `ours(source, workers)`.

    sources: "published" (the images as the datasets ship them) and "uncompressed" records.
    """
    put = lambda b: sharding.global_batch(mesh, b)  # noqa: E731
    crops, test = (3, False) if mode == "train" else (15, True)

    def spec(source):
        # Evaluation visits each example once: the files over and over, so that none ends.
        return pipeline.DataSpec(source, np.tile(np.arange(len(source)), 50),
                                 batch_size=BATCH, name="bench")

    def ours(source, w):
        if test:
            return lambda: _Closing(pipeline.eval_iterator(
                spec(source), batch_size=BATCH, shard=ONE, num_workers=w, num_threads=2), put)
        return lambda: _Closing(pipeline.train_iterator(
            [spec(source)], seed=0, crops_per_image=crops, shard=ONE, num_workers=w,
            num_threads=2), put)

    cores = pipeline.host_cores()
    published, bmp = sources["published"], sources["uncompressed"]
    return {f"grain ({workers} workers)": ours(published, workers),
            f"grain, uncompressed ({workers} workers)": ours(bmp, workers),
            f"torch ({cores} workers)": lambda: _PutInLoop(
                torch_iterator(published, crops, test, cores), mesh)}, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="KADID-like only, fewer batches (well under 2 minutes)")
    parser.add_argument("--batches", type=int, default=0, help="timed batches (0: by --quick)")
    args = parser.parse_args()
    batches = args.batches or (6 if args.quick else 15)
    cases = ["kadid"] if args.quick else ["kadid", "koniq"]
    workers = pipeline.host_workers()
    mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
    cores = pipeline.host_cores()
    print(f"{platform.processor() or platform.machine()}, {cores} cores, load "
          f"{os.getloadavg()[0]:.1f}; {datetime.date.today()}; jax {jax.__version__} on "
          f"{jax.devices()[0].platform}; {batches} timed batches of {BATCH} per row")
    rows = []

    def show(case, mode, name, r):
        rows.append((case, mode, name, r))
        print(f"  {case:6s} {mode:5s} {name:36s} {r['images_per_s']:7.1f} img/s  "
              f"{r['images_per_cpu_s']:7.1f} img/CPU-s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        count = {"kadid": 48, "koniq": 32}
        sources = {c: {"published": make_source(tmp, c, count[c]),
                       "uncompressed": make_source(tmp, c, count[c], uncompressed=True)}
                   for c in cases}
        for case in cases:
            for mode in ("train", "test"):
                table, ours = methods(sources[case], mode, mesh, workers)
                for name, make in table.items():
                    show(case, mode, name, measure(make, batches))
                if case == "kadid" and mode == "train":
                    for stored in ("published", "uncompressed"):
                        for w in (1, 2):
                            show(case, mode, f"scaling: {stored}, {w} workers",
                                 measure(ours(sources[case][stored], w), batches))
        print()
        print(markdown_table(
            ("images", "crops", "pipeline", "images/s", "images per CPU-second"),
            [("512x384 PNG" if case == "kadid" else "1024x768 JPEG",
              f"{3 if mode == 'train' else 15} ({mode})", name, f"{r['images_per_s']:.1f}",
              f"{r['images_per_cpu_s']:.1f}") for case, mode, name, r in rows], align="lllrr"))
        goal = {name: r for case, mode, name, r in rows if case == "kadid" and mode == "train"}
        torch_r = next(r for n, r in goal.items() if n.startswith("torch"))
        print("\nGoals (KADID-like, 3 training crops): >= 150 images per CPU-second, ahead of the "
              "torch loader per CPU-second")
        for label, prefix in (("published records", "grain ("),
                              ("uncompressed records", "grain, uncompressed (")):
            per_core = next(r for n, r in goal.items() if n.startswith(prefix))["images_per_cpu_s"]
            print(f"  grain pipeline, {label}: {per_core:.0f} images per CPU-second "
                  f"(>= 150: {per_core >= 150}); "
                  f"{per_core / torch_r['images_per_cpu_s']:.2f}x the torch loader per CPU-s")


if __name__ == "__main__":
    main()
