"""Checks of the pipeline's batches against the table and the images, and the dataset and
fixtures its tests share."""
import grain
import numpy as np
import pytest

NAME = "synthetic_iqa/small"   # 4 references + 4 x 4 x 5 distorted = 84 images of 320 x 240
ONE = grain.sharding.NoSharding()


@pytest.fixture(scope="module")
def data_dir(synthetic_small_dir):  # conftest's, shared by the pipeline tests
    return synthetic_small_dir


@pytest.fixture(scope="module")
def spec(synthetic_small_spec):
    return synthetic_small_spec


def is_window(image: np.ndarray, crop: np.ndarray) -> bool:
    """Whether `crop` [s, s, 3] equals some window of `image` [h, w, 3] (candidates: the
    windows whose corner pixels are the crop's)."""
    size = crop.shape[0]
    h, w = image.shape[0] - size + 1, image.shape[1] - size + 1
    corners = (np.all(image[:h, :w] == crop[0, 0], axis=-1)
               & np.all(image[size - 1:, size - 1:] == crop[-1, -1], axis=-1))
    return any(np.array_equal(image[y:y + size, x:x + size], crop)
               for y, x in zip(*np.nonzero(corners)))


def assert_labels(batch: dict, table: dict, scenes: list):
    """Each row's labels are its example's (`index`) in `table` (`splits.read_labels`);
    `scenes[d]`: dataset d's scene table, or None (zero scenes, masked)."""
    i = batch["index"]
    np.testing.assert_allclose(batch["quality"], table["quality"][i])
    np.testing.assert_allclose(batch["mos"], table["mos"][i])
    np.testing.assert_array_equal(batch["distortion_class"], table["distortion_class"][i])
    np.testing.assert_array_equal(batch["ref_id"], table["ref_id"][i])
    for row, (index, d) in enumerate(zip(i, batch["dataset_id"])):
        want = np.zeros(9, np.float32) if scenes[d] is None else scenes[d][index]
        np.testing.assert_array_equal(batch["scenes"][row], want)
        assert batch["scene_mask"][row] == want.any()
