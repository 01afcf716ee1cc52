"""Any SQuAD v1.1-format JSON: set task.train_file/eval_file, or one file with split_by_article."""

from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.update(kind="qa", max_len=384, doc_stride=128)
    return config
