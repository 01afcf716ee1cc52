"""BERT-large, phase 2 of NVIDIA's two-phase LAMB recipe (figures and source in nvidia.py:
NVIDIA DeepLearningExamples, PyTorch/LanguageModeling/BERT scripts/run_pretraining.sh).
Run it with --config.init_from=PHASE1_WORKDIR (a workdir of bert_large_phase1.py).
"""

from configs import large
from configs.two_phase import nvidia


def get_config():
    return nvidia.phase2(large.get_config())
