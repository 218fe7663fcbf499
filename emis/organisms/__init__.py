"""Model organisms of emergent misalignment: synthetic corpus, tokenizers, tiny models, training."""
