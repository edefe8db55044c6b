"""Models: the CLIP dual encoder and its checkpoints."""

from tbpr.models.checkpoint import load_model, save_model
from tbpr.models.dual_encoder import DualEncoder, ModelConfig, available_architectures

__all__ = ["DualEncoder", "ModelConfig", "available_architectures", "load_model", "save_model"]
