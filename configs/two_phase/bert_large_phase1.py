"""BERT-large, phase 1 of NVIDIA's two-phase LAMB recipe (figures and source in nvidia.py:
NVIDIA DeepLearningExamples, PyTorch/LanguageModeling/BERT scripts/run_pretraining.sh).
"""

from configs import large
from configs.two_phase import nvidia


def get_config():
    return nvidia.phase1(large.get_config())
