"""Text augmentation: EDA word operations (``operations``), WordNet set-up (``wordnet``) and the
training-time augmenter with back translation (``augment``)."""
