"""Model directories behind one format registry (`formats`), `load_pretrained`, the model a run
starts from (`init_from`), and the Hugging Face converters per family."""
