"""Using trained models: task predictions (`Predictor`, `bertjax predict`) and sentence
embeddings (`Embedder`, `bertjax embed`).

Both reuse what training has: the task's featurizer and post-processing, the trainer's jitted
`predict_step` with its shardings (data parallel over the local devices), and the model
directory loaders of `bertjax.interop.model_dir`.
"""

from bertjax.inference.embed import Embedder, embed_file
from bertjax.inference.predictor import Predictor, predict_file, predictor

__all__ = ["Embedder", "Predictor", "embed_file", "predict_file", "predictor"]
