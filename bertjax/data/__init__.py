"""Host-side data, numpy only (never imports jax): text and corpora, the WordPiece tokenizer,
pretraining instances and shards, packing, and the grain input pipeline."""
