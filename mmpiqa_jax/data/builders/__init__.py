"""tfds builders of the IQA datasets, one module per dataset exporting `BUILDER` (registered
with tfds on import); `base` holds what the builders of downloaded datasets share."""
