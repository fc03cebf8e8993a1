"""tfds builders of the IQA datasets, one module per dataset; each module exports `BUILDER`.

The real datasets are built from a folder the user downloaded (tfds `manual_dir`); `base` holds
what they share. Importing a module registers its builder with tfds under the dataset's name.
"""
