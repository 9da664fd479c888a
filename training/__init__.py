"""Two-tower training, evaluation against baselines, and export."""

import data  # noqa: F401  (selects Keras 2 before TensorFlow loads)
