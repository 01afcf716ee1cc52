"""SQuAD v1.1: extractive QA. Only the dev set is shared, so it is split by article."""

from configs.finetune import base


def get_config():
    config = base.get_config()
    config.task.update(
        kind="qa",
        train_file="$BERTJAX_DATA/squad-v1.1/dev-v1.1.json",
        eval_file="$BERTJAX_DATA/squad-v1.1/dev-v1.1.json",
        split_by_article=True,
        eval_fraction=0.2,
        max_len=384,
        doc_stride=128,
    )
    config.optim.learning_rate = 3e-5
    config.train.num_epochs = 2.0
    return config
