"""Face engine: plain functions and classes on numpy arrays (BGR uint8 frames). No Ray import here."""
