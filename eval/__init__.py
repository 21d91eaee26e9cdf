"""Measure encoders: Crossmodal-3600-style retrieval recall per language."""
