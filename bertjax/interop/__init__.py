"""Model directories, `load_pretrained`, and the Hugging Face converters per family."""
