"""Small helpers shared by tests."""

import numpy as np
from PIL import Image


def noise_image(h, w, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)
