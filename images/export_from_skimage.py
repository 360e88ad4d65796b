"""Export the bundled test images from scikit-image's data into this folder (run once; see SOURCES)."""
from pathlib import Path

from PIL import Image
from skimage import data

NAMES = ("astronaut", "coffee", "chelsea", "rocket", "camera")
# held out: no stopping rule of dip_denoise.py was developed on these (docs/results/dip_denoise/heldout_protocol.md)
HELD_OUT = ("brick", "grass", "gravel", "moon", "immunohistochemistry", "hubble_deep_field")

if __name__ == "__main__":
    for name in NAMES + HELD_OUT:
        Image.fromarray(getattr(data, name)()).save(Path(__file__).parent / f"{name}.png", optimize=True)
