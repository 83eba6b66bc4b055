"""ffray: FaceFusion-compatible face swapping for whole video libraries, distributed on Ray Data.

Colour order for every image array in the project is **BGR, uint8, HxWx3** (as FaceFusion).
"""

__version__ = "0.1.0"
