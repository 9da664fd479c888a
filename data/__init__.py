"""Interaction logs in, validated splits and `tf.data` pipelines out.

Every entry point of the project (``data``, ``training``, ``serving``)
imports this package first, so this is the one place that selects Keras 2
for TensorFlow Recommenders before TensorFlow is imported anywhere.
"""

import os

# TFRS 0.7 is written against Keras 2; TensorFlow 2.20 ships Keras 3 unless
# this is set before the first `import tensorflow`.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow logs a CUDA error on every start of a machine without a GPU;
# set TF_CPP_MIN_LOG_LEVEL yourself to see its C++ logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
