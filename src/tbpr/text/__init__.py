"""Text augmentation: EDA word operations (``operations``), WordNet set-up (``wordnet``) and the
training-time augmenter with the caption-store ops (back translation, BSS over LLM rewrites) (``augment``)."""
