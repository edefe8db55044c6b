"""Image generation: backends that make person images, and the diffusion library they use."""
