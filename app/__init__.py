"""Gradio web UI and API: multilingual text -> image search over a photo library."""
