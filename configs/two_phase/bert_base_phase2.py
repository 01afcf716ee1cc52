"""BERT-base, phase 2 of NVIDIA's two-phase LAMB recipe (figures and source in nvidia.py:
NVIDIA DeepLearningExamples, PyTorch/LanguageModeling/BERT scripts/run_pretraining.sh).
Run it with --config.init_from=PHASE1_WORKDIR (a workdir of bert_base_phase1.py).
"""

from configs import base
from configs.two_phase import nvidia


def get_config():
    return nvidia.phase2(base.get_config())
