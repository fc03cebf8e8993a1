"""Tiny fake copies of the published IQA datasets, laid out exactly as the real downloads.

Each `write_<dataset>(root, ...)` writes a few 16 x 16 images and the real score-file format
(CSV, `.mat` by scipy, `.xlsx` by openpyxl, `.xls` by xlwt, text) under `root`, and returns a
`Fake` saying what a builder must read from it. `bad_score=NAME` leaves the score of that image
empty (NaN in a .mat file), for error tests.
"""
import csv
import dataclasses
import math
import pathlib

import numpy as np
import scipy.io
from PIL import Image

from mmpiqa_jax import labels

NAN = float("nan")
SIZE = 16


@dataclasses.dataclass(frozen=True)
class Expected:
    """What a builder must store for one image."""

    mos: float
    ref: object                 # images with equal `ref` share a reference
    row: str                    # where the score file lists it: "row 3", "line 2", "entry 5"
    distortion_type: str = ""
    distortion_class: int = -1
    level: int = 0
    mos_std: float = NAN
    split: str = "full"
    shape: tuple[int, int, int] = (SIZE, SIZE, 3)


@dataclasses.dataclass
class Fake:
    root: pathlib.Path
    score_file: pathlib.Path    # the file errors must name
    images: dict[str, Expected]  # stored name (path relative to root) -> expectations


def scores(count: int, low: float, high: float) -> list[float]:
    """Distinct scores spread over [low, high] in a fixed, unsorted order."""
    values = np.random.default_rng(count).permutation(np.linspace(low, high, count))
    return [round(float(v), 3) for v in values]


def write_image(path: pathlib.Path, seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> None:
    """Random RGB pixels; the format follows the extension (PNG, BMP, JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    fmt = {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG"}[path.suffix.lower()]
    Image.fromarray(pixels).save(path, format=fmt)


def write_csv(path: pathlib.Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_xlsx(path: pathlib.Path, sheets: dict[str, list[list]]) -> None:
    import openpyxl  # pylint: disable=import-outside-toplevel
    path.parent.mkdir(parents=True, exist_ok=True)
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)


def write_xls(path: pathlib.Path, sheets: dict[str, list[list]]) -> None:
    import xlwt  # pylint: disable=import-outside-toplevel
    path.parent.mkdir(parents=True, exist_ok=True)
    book = xlwt.Workbook()
    for title, rows in sheets.items():
        sheet = book.add_sheet(title)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if value is not None:
                    sheet.write(r, c, value)
    book.save(str(path))


def _score(name: str, mos: float, bad_score: str | None):
    return None if name == bad_score else mos


# ------------------------------------------------------------------------------------------------
# Synthetic distortions: 3 references x 2 types x 2 levels.

def write_kadid10k(root: pathlib.Path, bad_score: str | None = None) -> Fake:
    """KADID-10k: `dmos.csv` and `images/I01_01_01.png`; types 1 (gaussian blur), 16 (brighten)."""
    kinds = {1: ("gaussian blur", "blur"), 16: ("brighten", "overexposure")}
    keys = [(r, k, l) for r in (1, 2, 3) for k in kinds for l in (1, 2)]
    rows, images = [], {}
    for i, ((ref, kind, level), mos) in enumerate(zip(keys, scores(len(keys), 1.2, 4.8))):
        file = f"I{ref:02d}_{kind:02d}_{level:02d}.png"
        var = 0.01 * (i + 1)
        write_image(root / "images" / file, i)
        rows.append([file, f"I{ref:02d}.png", _score(f"images/{file}", mos, bad_score), var])
        name, cls = kinds[kind]
        images[f"images/{file}"] = Expected(
            mos, ref, f"row {i + 2}", name, labels.distortion_index(cls), level, math.sqrt(var))
    for ref in (1, 2, 3):
        write_image(root / "images" / f"I{ref:02d}.png", 100 + ref)
    write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    return Fake(root, root / "dmos.csv", images)


CSIQ_FILES = ("csiq.DMOS.xlsx", "csiq.beta.xlsx", "csiq.beta.txt")


def write_csiq(root: pathlib.Path, score_file: str = "csiq.DMOS.xlsx",
               bad_score: str | None = None) -> Fake:
    """CSIQ: the sheet `all_by_image` (or its text export) and `dst_imgs/<dir>/...png`.

    Reference `1600` is written as a number, as in the real spreadsheet.
    """
    kinds = {"noise": (1, "awgn", "AWGN", "noise"),
             "jpeg 2000": (3, "jpeg2000", "jpeg2000", "jpeg2000 compression")}
    refs = (1600, "aerial_city", "boston")
    keys = [(r, k, l) for r in refs for k in kinds for l in (1, 2)]
    header = ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]
    rows, images = [], {}
    for i, ((ref, kind, level), dmos) in enumerate(zip(keys, scores(len(keys), 0.05, 0.95))):
        idx, directory, label, cls = kinds[kind]
        name = f"dst_imgs/{directory}/{ref}.{label}.{level}.png"
        write_image(root / name, i)
        std = round(0.01 * (i + 1), 3)
        rows.append([ref, idx, kind, level, std, _score(name, dmos, bad_score)])
        images[name] = Expected(dmos, str(ref), f"row {i + 2}", kind,
                                labels.distortion_index(cls), level, std)
    for k, ref in enumerate(refs):
        write_image(root / "src_imgs" / f"{ref}.png", 100 + k)
    path = root / score_file
    if score_file.endswith(".txt"):
        lines = ["\t".join(header)] + ["\t".join("" if v is None else str(v) for v in row)
                                       for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        # The real workbook has other sheets before `all_by_image`.
        write_xlsx(path, {"all_by_distortion": [["not", "this", "sheet"]],
                          "all_by_image": [header] + rows})
    return Fake(root, path, images)


LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def write_live_iqa(root: pathlib.Path, score_file: str = "dmos_realigned.mat",
                   bad_score: str | None = None) -> Fake:
    """LIVE Release 2: 982-entry .mat arrays; 5 distorted entries, every other one a reference
    copy (`orgs` 1). One realigned DMOS is negative, as in the real file."""
    starts = {}
    offset = 0
    for folder, count in LIVE_FOLDERS:
        starts[folder] = offset
        offset += count
    kept = {("jp2k", 1): (-2.0, "parrots.bmp"), ("jp2k", 2): (30.5, "buildings.bmp"),
            ("wn", 1): (60.2, "parrots.bmp"), ("wn", 2): (45.0, "caps.bmp"),
            ("fastfading", 1): (99.0, "caps.bmp")}
    classes = {"jp2k": "jpeg2000 compression", "wn": "noise", "fastfading": "jpeg2000 compression"}
    dmos, std = np.zeros(offset), np.zeros(offset)
    orgs = np.ones(offset)
    refnames = np.array(["parrots.bmp"] * offset, dtype=object)
    realigned = score_file == "dmos_realigned.mat"
    images = {}
    for i, ((folder, k), (value, ref)) in enumerate(kept.items()):
        index = starts[folder] + k - 1
        name = f"{folder}/img{k}.bmp"
        value = value if realigned else abs(value)
        dmos[index] = NAN if name == bad_score else value
        std[index] = 5.0 + i
        orgs[index] = 0
        refnames[index] = ref
        write_image(root / name, i)
        images[name] = Expected(value, ref, f"entry {index + 1}", folder,
                                labels.distortion_index(classes[folder]),
                                mos_std=std[index] if realigned else NAN)
    write_image(root / "jp2k" / "img3.bmp", 50)  # a reference copy: orgs 1, left out
    for k, ref in enumerate(("parrots.bmp", "buildings.bmp", "caps.bmp")):
        write_image(root / "refimgs" / ref, 100 + k)
    path = root / score_file
    if realigned:
        scipy.io.savemat(path, {"dmos_new": dmos[None], "orgs": orgs[None], "dmos_std": std[None]})
    else:
        scipy.io.savemat(path, {"dmos": dmos[None], "orgs": orgs[None]})
    scipy.io.savemat(root / "refnames_all.mat", {"refnames_all": refnames[None]})
    return Fake(root, path, images)


def write_tid2013(root: pathlib.Path, bad_score: str | None = None) -> Fake:
    """TID2013: `mos_with_names.txt` names in lower case, files on disk in upper case."""
    kinds = {1: ("additive gaussian noise", "noise"), 8: ("gaussian blur", "blur")}
    keys = [(r, k, l) for r in (1, 2, 3) for k in kinds for l in (1, 2)]
    lines, stds, images = [], [], {}
    for i, ((ref, kind, level), mos) in enumerate(zip(keys, scores(len(keys), 0.5, 7.0))):
        listed = f"i{ref:02d}_{kind:02d}_{level}.bmp"
        name = f"distorted_images/{listed.upper()}"
        write_image(root / name, i)
        std = round(0.1 * (i + 1), 3)
        lines.append(f"{'' if name == bad_score else f'{mos:.5f}'} {listed}")
        stds.append(f"{std:.5f}")
        type_name, cls = kinds[kind]
        images[name] = Expected(mos, ref, f"line {i + 1}", type_name,
                                labels.distortion_index(cls), level, std)
    for ref in (1, 2, 3):
        write_image(root / "reference_images" / f"I{ref:02d}.BMP", 100 + ref)
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "mos_std.txt").write_text("\n".join(stds) + "\n", encoding="utf-8")
    return Fake(root, root / "mos_with_names.txt", images)


# ------------------------------------------------------------------------------------------------
# In the wild: no distortion labels, each image its own reference.

KONIQ_SETS = ("training", "training", "training", "validation", "test")
_KONIQ_SPLITS = {"training": "train", "validation": "validation", "test": "test"}
KONIQ_SETS_FILE = "koniq10k_distributions_sets.csv"
KONIQ_SCORES_FILE = "koniq10k_scores_and_distributions.csv"
KONIQ_COUNTS_HEADER = ["c1", "c2", "c3", "c4", "c5", "c_total"]


def koniq_counts(i: int) -> list[int]:
    """The rating counts c1..c5 of image `i`, different in shape for every image."""
    return [i + 1, 2 * i % 5 + 1, 3, 4 + i, 5 - i]


def rating_mean_std(counts) -> tuple[float, float]:
    """Mean and standard deviation (ddof 0) on 1 - 5 of a rating distribution."""
    levels = np.arange(1, 6)
    mean = float(np.average(levels, weights=counts))
    return mean, float(np.sqrt(np.average((levels - mean) ** 2, weights=counts)))


def write_koniq10k(root: pathlib.Path, score_file: str | None = None,
                   folders: tuple[str, ...] = ("1024x768",), bad_score: str | None = None,
                   files: tuple[str, ...] = (KONIQ_SETS_FILE, KONIQ_SCORES_FILE),
                   zscore: bool = False) -> Fake:
    """KonIQ-10k: the CSVs in `files` (`score_file` alone, if given) and the image folders
    given (images named for the first folder).

    The sets CSV has the official `set`, `c1..c5` as fractions of `c_total` (as in the real
    file), `MOS` on 0 - 100 and an `SD` that no config reads; the scores CSV (rows in reverse
    order, so that joining must go by name) has counts `c1..c5`, `MOS` and `SD` on 1 - 5 and
    `MOS_zscore`. Its `MOS` and `SD` are not the mean and std of `c1..c5`, so that a test
    tells which was read. Expectations are those of the 1 - 5 configs, or with `zscore` of the
    z-score configs. `bad_score` blanks the image's scores (`MOS`, `MOS_zscore`, `c1`).
    """
    files = (score_file,) if score_file is not None else tuple(files)
    with_sets, with_scores = KONIQ_SETS_FILE in files, KONIQ_SCORES_FILE in files
    names = [f"{826373 + 1000 * i}.jpg" for i in range(len(KONIQ_SETS))]
    zscores = scores(len(names), 10.0, 90.0)
    sets_rows, scores_rows, images = [], [], {}
    for i, (file, z, subset) in enumerate(zip(names, zscores, KONIQ_SETS)):
        for folder in folders:
            write_image(root / folder / file, i)
        name = f"{folders[0]}/{file}"
        bad = name == bad_score
        counts = koniq_counts(i)
        total = sum(counts)
        listed = [None if bad and k == 0 else c for k, c in enumerate(counts)]  # c1 blank
        fractions = [None if c is None else round(c / total, 12) for c in listed]
        mos_1_5, sd = round(1 + 4 * z / 100, 3), round(0.3 + 0.01 * i, 3)
        sets_rows.append([file, *fractions, total, _score(name, z, bad_score),
                          round(0.6 + 0.02 * i, 3), subset])
        scores_rows.insert(0, [file, *listed, total, _score(name, mos_1_5, bad_score), sd,
                               _score(name, z, bad_score)])
        if zscore:
            mos, std = z, NAN
        elif with_scores:
            mos, std = mos_1_5, sd
        else:
            mos, std = rating_mean_std(counts)
        row = len(names) - i + 1 if with_scores else i + 2
        images[name] = Expected(mos, i, f"row {row}", mos_std=std,
                                split=_KONIQ_SPLITS[subset] if with_sets else "full")
    if with_sets:
        write_csv(root / KONIQ_SETS_FILE,
                  ["image_name", *KONIQ_COUNTS_HEADER, "MOS", "SD", "set"], sets_rows)
    if with_scores:
        write_csv(root / KONIQ_SCORES_FILE,
                  ["image_name", *KONIQ_COUNTS_HEADER, "MOS", "SD", "MOS_zscore"], scores_rows)
    return Fake(root, root / (KONIQ_SCORES_FILE if with_scores else KONIQ_SETS_FILE), images)


def write_live_challenge(root: pathlib.Path, bad_score: str | None = None) -> Fake:
    """CLIVE: `Data/*.mat` (names as a cell column) with 7 training entries first."""
    training = [f"t{k}.bmp" for k in range(1, 8)]
    files = ["10.bmp", "100.bmp", "1000.JPG", "1001.bmp"]
    mos = [50.0] * 7 + scores(len(files), 5.0, 92.0)
    std = [10.0] * 7 + [12.0 + k for k in range(len(files))]
    for k, file in enumerate(training):
        write_image(root / "Images" / "trainingImages" / file, 200 + k)
    images = {}
    for k, file in enumerate(files):
        index = 7 + k
        name = f"Images/{file}"
        write_image(root / name, k)
        if name == bad_score:
            mos[index] = NAN
        images[name] = Expected(mos[index], k, f"entry {index + 1}", mos_std=std[index])
    data = root / "Data"
    data.mkdir(parents=True, exist_ok=True)
    names = np.array(training + files, dtype=object)[:, None]  # a 1169 x 1 cell in the real file
    scipy.io.savemat(data / "AllImages_release.mat", {"AllImages_release": names})
    scipy.io.savemat(data / "AllMOS_release.mat", {"AllMOS_release": np.array(mos)[None]})
    scipy.io.savemat(data / "AllStdDev_release.mat", {"AllStdDev_release": np.array(std)[None]})
    return Fake(root, data / "AllMOS_release.mat", images)


def write_bid(root: pathlib.Path, score_file: str = "DatabaseGrades.xlsx",
              bad_score: str | None = None) -> Fake:
    """BID: `DatabaseGrades.xlsx`/`.xls` (a header row, then image number, MOS, grades)."""
    rows = [["Image", "Average Grade", "Grade 1", "Grade 2"]]
    images = {}
    for k, mos in enumerate(scores(4, 0.3, 4.8), start=1):
        name = f"ImageDatabase/DatabaseImage{k:04d}.JPG"
        write_image(root / name, k)
        rows.append([k, _score(name, mos, bad_score), 3, 4])
        images[name] = Expected(mos, k, f"row {k + 1}")
    path = root / score_file
    (write_xls if score_file.endswith(".xls") else write_xlsx)(path, {"Sheet1": rows})
    return Fake(root, path, images)


SPAQ_LARGE = (520, 600)  # width, height: shrunk so that the shorter side is 512


def write_spaq(root: pathlib.Path, bad_score: str | None = None) -> Fake:
    """SPAQ: the annotations spreadsheet and `TestImage/0000k.jpg`; image 2 is large."""
    header = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness",
              "Sharpness"]
    rows, images = [header], {}
    for k, mos in enumerate(scores(3, 8.0, 88.0), start=1):
        file = f"{k:05d}.jpg"
        name = f"TestImage/{file}"
        size = SPAQ_LARGE if k == 2 else (SIZE, SIZE)
        write_image(root / name, k, size)
        rows.append([file, _score(name, mos, bad_score), 50, 50, 50, 50, 50])
        shape = (591, 512, 3) if k == 2 else (SIZE, SIZE, 3)  # 600 * 512 / 520 = 590.8
        images[name] = Expected(mos, k, f"row {k + 1}", shape=shape)
    path = root / "Annotations" / "MOS and Image attribute scores.xlsx"
    write_xlsx(path, {"Sheet1": rows})
    return Fake(root, path, images)
