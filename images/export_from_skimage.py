"""Export the bundled test images from scikit-image's data into this folder (run once; see SOURCES)."""
from pathlib import Path

from PIL import Image
from skimage import data

NAMES = ("astronaut", "coffee", "chelsea", "rocket", "camera")

if __name__ == "__main__":
    for name in NAMES:
        Image.fromarray(getattr(data, name)()).save(Path(__file__).parent / f"{name}.png", optimize=True)
