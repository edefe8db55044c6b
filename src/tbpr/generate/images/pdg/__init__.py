"""PDG's controlled text-image pairs: the colour swap of a caption, the plan of pairs per person, and the
dataset of generated pairs (docs/pdg.md)."""
