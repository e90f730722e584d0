"""Stage II as a video enhancer for clips of any length and size (docs/ENHANCE.md)."""
