"""SynthPedes: a procedurally generated pedestrian benchmark written in the CUHK-PEDES layout."""

from tbpr.data.synthpedes.contact_sheet import write_contact_sheet
from tbpr.data.synthpedes.generation import SIZES, generate

__all__ = ["SIZES", "generate", "write_contact_sheet"]
