"""LIQE's six datasets as download folders, with a quality a tiny CLIP can learn, and LIQE's
`IQA_Database` split files for them.

Every image is a smooth random reference degraded by white noise or blur at one of `LEVELS`
levels; its quality falls with the level. Each dataset writes that quality in its own published
score file, format and direction (LIVE and CSIQ a DMOS, lower is better), and the LIQE files give
LIQE's higher-is-better score, distortion name and scenes of every image, split 70/10/20 by
reference as LIQE's are.
"""
import dataclasses
import pathlib

import numpy as np
import scipy.io
from PIL import Image, ImageFilter

from fake_datasets import write_csv, write_xlsx
from mmpiqa_jax import labels

SIZE = 48          # pixels per side: 32 px crops fit
LEVELS = 5         # degradation levels; level 0 is the mildest
REFERENCES = 6     # per synthetic dataset (70/10/20 by reference: 4 / 1 / 1)
WILD = 30          # images per in-the-wild dataset, each its own reference
KINDS = ("noise", "blur")
LIQE_DISTORTION = {"noise": "white noise", "blur": "gaussian blur"}
LIQE_WILD_DISTORTION = {"noise": "realistic noise", "blur": "realistic blur"}


@dataclasses.dataclass
class FixtureImage:
    """One written image: where it is, what it shows and what LIQE's file says of it."""
    path: str          # relative to the dataset folder
    ref: int
    kind: str
    level: int
    quality: float     # in [0, 1], higher is better
    liqe_score: float  # LIQE's file score, higher is better
    scenes: tuple[str, ...]


def reference_image(seed: int) -> np.ndarray:
    """A 48 x 48 mosaic of 6 px colour blocks (uint8 [48, 48, 3]): sharp edges that blur
    visibly softens, flat blocks on which noise shows."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, (8, 8, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((SIZE, SIZE), Image.NEAREST))


def degrade(pixels: np.ndarray, kind: str, level: int, seed: int) -> Image.Image:
    """White noise of std 14 * (level + 1), or a Gaussian blur of radius 0.6 * (level + 1)."""
    if kind == "noise":
        noise = np.random.default_rng(seed).normal(0, 14.0 * (level + 1), pixels.shape)
        return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(0.6 * (level + 1)))


def quality_of(level: int, seed: int) -> float:
    jitter = np.random.default_rng(seed).uniform(-0.03, 0.03)
    return float(np.clip(0.92 - 0.2 * level + jitter, 0.02, 0.98))


def _scenes(ref: int) -> tuple[str, ...]:
    first = labels.SCENES[ref % len(labels.SCENES)]
    return (first, "night") if ref % 3 == 0 and first != "night" else (first,)


def _save(root: pathlib.Path, relative: str, image: Image.Image) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG"}[path.suffix.lower()]
    image.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def _synthetic(root, seed, path_of, liqe_score):
    """REFERENCES x KINDS x LEVELS images; `path_of(ref, kind, level)` names each."""
    images = []
    for ref in range(REFERENCES):
        pixels = reference_image(seed + ref)
        for kind in KINDS:
            for level in range(LEVELS):
                s = seed * 1000 + ref * 100 + KINDS.index(kind) * 10 + level
                q = quality_of(level, s)
                path = path_of(ref, kind, level)
                _save(root, path, degrade(pixels, kind, level, s))
                images.append(FixtureImage(path, ref, kind, level, q, liqe_score(q), _scenes(ref)))
    return images


def _wild(root, seed, path_of, liqe_score):
    images = []
    for k in range(WILD):
        s = seed * 1000 + k
        kind, level = KINDS[k % 2], (k // 2) % LEVELS
        q = quality_of(level, s)
        path = path_of(k)
        _save(root, path, degrade(reference_image(s), kind, level, s))
        images.append(FixtureImage(path, k, kind, level, q, liqe_score(q), _scenes(k)))
    return images


# ------------------------------------------------------------------------------------------------
# The six folders, in their published formats.

def write_kadid10k(root):
    kind_no = {"blur": 1, "noise": 11}
    images = _synthetic(
        root, 1, lambda r, k, l: f"images/I{r + 1:02d}_{kind_no[k]:02d}_{l + 1:02d}.png",
        lambda q: 1 + 4 * q)
    for ref in range(REFERENCES):
        _save(root, f"images/I{ref + 1:02d}.png", Image.fromarray(reference_image(1 + ref)))
    write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"],
              [[im.path.split("/")[1], f"I{im.ref + 1:02d}.png", round(1 + 4 * im.quality, 4),
                0.1] for im in images])
    return images


CSIQ_REFS = ("1600", "aerial_city", "boston", "bridge", "butter_flower", "cactus")


def write_csiq(root):
    label = {"noise": ("awgn", "AWGN", "noise", 1), "blur": ("blur", "BLUR", "blur", 4)}
    images = _synthetic(root, 2, lambda r, k, l: (f"dst_imgs/{label[k][0]}/{CSIQ_REFS[r]}."
                                                  f"{label[k][1]}.{l + 1}.png"),
                        lambda q: q)  # LIQE writes 1 - DMOS, which is our quality
    rows = [[int(CSIQ_REFS[im.ref]) if CSIQ_REFS[im.ref].isdigit() else CSIQ_REFS[im.ref],
             label[im.kind][3], label[im.kind][2], im.level + 1, 0.05, round(1 - im.quality, 4)]
            for im in images]
    write_xlsx(root / "csiq.DMOS.xlsx", {"all_by_image": [
        ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"], *rows]})
    return images


LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
LIVE_WORST = 111.77


def write_live_iqa(root):
    start = {}
    offset = 0
    for folder, count in LIVE_FOLDERS:
        start[folder] = offset
        offset += count
    counter = {"wn": 0, "gblur": 0}
    def path_of(ref, kind, level):
        folder = "wn" if kind == "noise" else "gblur"
        counter[folder] += 1
        return f"{folder}/img{counter[folder]}.bmp"
    images = _synthetic(root, 3, path_of, lambda q: LIVE_WORST * q)  # LIQE: 111.77 - DMOS
    dmos, std, orgs = np.zeros(offset), np.full(offset, 5.0), np.ones(offset)
    refnames = np.array(["ref0.bmp"] * offset, dtype=object)
    for im in images:
        folder, number = im.path.split("/")
        index = start[folder] + int(number[3:-4]) - 1
        dmos[index], orgs[index] = LIVE_WORST * (1 - im.quality), 0
        refnames[index] = f"ref{im.ref}.bmp"
    scipy.io.savemat(root / "dmos_realigned.mat",
                     {"dmos_new": dmos[None], "orgs": orgs[None], "dmos_std": std[None]})
    scipy.io.savemat(root / "refnames_all.mat", {"refnames_all": refnames[None]})
    return images


def write_koniq10k(root):
    images = _wild(root, 4, lambda k: f"1024x768/{826373 + 1000 * k}.jpg", lambda q: 1 + 4 * q)
    counts_header = ["c1", "c2", "c3", "c4", "c5", "c_total"]
    scores, sets = [], []
    for k, im in enumerate(images):
        mos = 1 + 4 * im.quality
        # Rating counts whose mean is the MOS: 100 ratings between floor and ceil.
        lo = int(np.floor(mos)) if mos < 5 else 4
        hi_share = int(round(100 * (mos - lo)))
        counts = [0] * 5
        counts[lo - 1] += 100 - hi_share
        counts[lo] += hi_share
        mos = sum((i + 1) * c for i, c in enumerate(counts)) / 100
        im.quality, im.liqe_score = (mos - 1) / 4, mos
        file = im.path.split("/")[1]
        sd = float(np.sqrt(sum(c * (i + 1 - mos) ** 2 for i, c in enumerate(counts)) / 100))
        scores.append([file, *counts, 100, round(mos, 6), round(sd, 6), round(100 * im.quality, 4)])
        sets.append([file, *counts, 100, round(100 * im.quality, 4), round(sd, 6),
                     ("training", "validation", "test")[k % 10 // 7 + (k % 10 == 9)]])
    write_csv(root / "koniq10k_scores_and_distributions.csv",
              ["image_name", *counts_header, "MOS", "SD", "MOS_zscore"], scores)
    write_csv(root / "koniq10k_distributions_sets.csv",
              ["image_name", *counts_header, "MOS", "SD", "set"], sets)
    return images


def write_live_challenge(root):
    images = _wild(root, 5, lambda k: f"Images/{10 + k}.bmp", lambda q: 100 * q)
    training = [f"t{k}.bmp" for k in range(1, 8)]
    for k, file in enumerate(training):
        _save(root, f"Images/trainingImages/{file}", Image.fromarray(reference_image(900 + k)))
    names = np.array(training + [im.path.split("/")[1] for im in images], dtype=object)[:, None]
    mos = np.array([50.0] * 7 + [100 * im.quality for im in images])
    data = root / "Data"
    data.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(data / "AllImages_release.mat", {"AllImages_release": names})
    scipy.io.savemat(data / "AllMOS_release.mat", {"AllMOS_release": mos[None]})
    scipy.io.savemat(data / "AllStdDev_release.mat",
                     {"AllStdDev_release": np.full(len(mos), 10.0)[None]})
    return images


def write_bid(root):
    images = _wild(root, 6, lambda k: f"ImageDatabase/DatabaseImage{k + 1:04d}.JPG",
                   lambda q: 5 * q)
    rows = [["Image", "Average Grade", "Grade 1"]]
    rows += [[k + 1, round(5 * im.quality, 4), 3] for k, im in enumerate(images)]
    write_xlsx(root / "DatabaseGrades.xlsx", {"Sheet1": rows})
    return images


# dataset -> (writer, LIQE folder, LIQE file prefix, in the wild)
DATASETS = {
    "live_iqa": (write_live_iqa, "databaserelease2", "live", False),
    "csiq": (write_csiq, "CSIQ", "csiq", False),
    "kadid10k": (write_kadid10k, "kadid10k", "kadid10k", False),
    "koniq10k": (write_koniq10k, "koniq-10k", "koniq10k", True),
    "live_challenge": (write_live_challenge, "ChallengeDB_release", "clive", True),
    "bid": (write_bid, "BID", "bid", True),
}


def liqe_parts(images, seed: int = 0) -> dict[str, list]:
    """70/10/20 of the references, as LIQE's files split them."""
    refs = np.random.default_rng(seed).permutation(sorted({im.ref for im in images}))
    cuts = np.rint(np.cumsum([0.7, 0.1]) * len(refs)).astype(int)
    owner = {}
    for part, chunk in zip(("train", "val", "test"), np.split(refs, cuts)):
        owner.update({int(r): part for r in chunk})
    return {part: [im for im in images if owner[im.ref] == part]
            for part in ("train", "val", "test")}


def write_liqe_file(path: pathlib.Path, rows) -> None:
    """One LIQE split file, a line per (image path, score, LIQE distortion name, scenes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join([name, str(float(score)), dist, *scenes, *["invalid"] * (3 - len(scenes))])
             for name, score, dist, scenes in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_liqe_files(database: pathlib.Path, name: str, images, split: int = 1) -> dict:
    """`<database>/<folder>/splits2/<split>/<db>_<part>_clip.txt`; returns {part: [paths]}."""
    _, folder, db, wild = DATASETS[name]
    parts = liqe_parts(images, split - 1)
    for part, members in parts.items():
        write_liqe_file(database / folder / "splits2" / str(split) / f"{db}_{part}_clip.txt",
                        [(im.path, im.liqe_score,
                          (LIQE_WILD_DISTORTION if wild else LIQE_DISTORTION)[im.kind], im.scenes)
                         for im in members])
    return {part: [im.path for im in members] for part, members in parts.items()}
