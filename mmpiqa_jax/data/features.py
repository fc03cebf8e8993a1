"""The features every IQA builder writes, so that all datasets read alike."""
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer

# tfds reserves the split name `all` for the union of a dataset's splits: datasets without an
# official split write one split, `full`, and are read with split="all" like every other dataset.
FULL_SPLIT = "full"


def iqa_features() -> tfds.features.FeaturesDict:
    """Features shared by every builder (see README, "Datasets")."""
    scalar = tfds.features.Scalar
    return tfds.features.FeaturesDict({
        # Encoded bytes are passed in (PNG or JPEG), so that writing needs no TensorFlow.
        "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
        "name": tfds.features.Text(),                 # path relative to the dataset folder
        "mos": scalar(dtype=np.float32),              # raw published score
        "mos_std": scalar(dtype=np.float32),          # NaN where not published
        "quality": scalar(dtype=np.float32),          # in [0, 1], higher is always better
        "ref_id": scalar(dtype=np.int32),             # reference image (own index in the wild)
        "distortion_type": tfds.features.Text(),      # the dataset's own name, "" if none
        "distortion_class": scalar(dtype=np.int32),   # index into labels.DISTORTIONS, -1 if none
        "level": scalar(dtype=np.int32),              # 0 if none
    })


def iqa_example(image: bytes, name: str, mos: float, quality: float, ref_id: int, *,
                mos_std: float = float("nan"), distortion_type: str = "",
                distortion_class: int = -1, level: int = 0) -> dict:
    """One example of `iqa_features()`; the defaults: no published std, no distortion."""
    return {"image": image, "name": name, "mos": mos, "mos_std": mos_std, "quality": quality,
            "ref_id": ref_id, "distortion_type": distortion_type,
            "distortion_class": distortion_class, "level": level}


class DeterministicBuilder(tfds.core.GeneratorBasedBuilder):
    """A builder whose every build of the same input writes the same bytes."""

    def _download_and_prepare(self, dl_manager, download_config=None):
        # upb serialises a proto map in an order seeded per process: tfds is made to write
        # each tf.Example with its features sorted while this build runs.
        cls = example_serializer.ExampleSerializer
        original = cls.serialize_example

        def serialize_example(serializer, example):
            return serializer.get_tf_example(example).SerializeToString(deterministic=True)

        cls.serialize_example = serialize_example
        try:
            return super()._download_and_prepare(dl_manager, download_config)
        finally:
            cls.serialize_example = original
