"""Source photographs for the offline corpus: real photos shipped inside installed packages,
plus procedurally drawn scenes, each with a factual caption and content questions.

Only files that are really in the installed wheels are used (read from the
package folders, never fetched): scikit-image's ``skimage/data`` and
scikit-learn's ``sklearn/datasets/images``. Which photos are held out for the
test sets is fixed here, so no test image ever shares a source with training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


@dataclass(frozen=True)
class Source:
    key: str
    caption: str
    questions: tuple[tuple[str, str], ...]
    """Content questions and their answers (for general, D3-style records)."""
    package: str = ""
    filename: str = ""
    seed: int | None = None
    """For drawn scenes: the seed that draws them."""

    def load(self) -> Image.Image:
        if self.seed is not None:
            return draw_scene(self.seed)[0]
        if self.package == "":
            return Image.open(self.filename).convert("RGB")
        import importlib

        folder = {"skimage": ("skimage", "data"), "sklearn": ("sklearn", "datasets", "images")}[self.package]
        root = Path(importlib.import_module(folder[0]).__file__).parent.joinpath(*folder[1:])
        path = root / self.filename
        if not path.is_file():
            raise FileNotFoundError(f"{path}: sample photo missing from the installed {self.package} package")
        return Image.open(path).convert("RGB")


PHOTOS = (
    Source("astronaut", "an astronaut in an orange spacesuit posing beside an American flag and a model "
           "of the space shuttle", (("What is the person wearing?", "An orange spacesuit."),
                                    ("What flag is in the background?", "The flag of the United States.")),
           "skimage", "astronaut.png"),
    Source("chelsea", "a close-up of a tabby cat's face with green eyes",
           (("What animal is in the picture?", "A cat."), ("What colour are its eyes?", "Green.")),
           "skimage", "chelsea.png"),
    Source("coffee", "a cup of espresso on a red saucer with a spoon, on a wooden table",
           (("What drink is shown?", "A cup of espresso."), ("What colour is the saucer?", "Red.")),
           "skimage", "coffee.png"),
    Source("rocket", "a rocket on a launch pad between lightning towers at dusk",
           (("What stands on the launch pad?", "A rocket."), ("What time of day is it?", "Dusk.")),
           "skimage", "rocket.jpg"),
    Source("motorcycle", "a red motorcycle parked in a garage with shelves in the background",
           (("What vehicle is shown?", "A motorcycle."), ("What colour is the fuel tank?", "Red.")),
           "skimage", "motorcycle_left.png"),
    Source("hubble", "a deep-space telescope view full of small galaxies on a black background",
           (("What does the picture show?", "Many distant galaxies."), ("What colour is the background?",
                                                                         "Black.")),
           "skimage", "hubble_deep_field.jpg"),
    Source("cameraman", "a black-and-white photo of a man in a dark coat looking through a camera on a tripod",
           (("What is the man using?", "A camera on a tripod."), ("Is the photo in colour?", "No.")),
           "skimage", "camera.png"),
    Source("moon", "a grey close-up of the cratered surface of the moon",
           (("What surface is shown?", "The surface of the moon."), ("What features can be seen?",
                                                                      "Craters.")),
           "skimage", "moon.png"),
    Source("coins", "a grid of old coins on a dark background",
           (("What objects are shown?", "Coins."), ("How are they arranged?", "In rows, as a grid.")),
           "skimage", "coins.png"),
    Source("brick", "a grey brick wall seen straight on", (("What is shown?", "A brick wall."),),
           "skimage", "brick.png"),
    Source("grass", "a close-up of dense grass", (("What plant covers the picture?", "Grass."),),
           "skimage", "grass.png"),
    Source("gravel", "a close-up of grey gravel stones", (("What covers the ground?", "Gravel."),),
           "skimage", "gravel.png"),
    Source("ihc", "a microscope image of stained tissue, brown cell walls on a pale blue background",
           (("What kind of image is this?", "A microscope image of stained tissue."),),
           "skimage", "ihc.png"),
    Source("retina", "a photograph of the back of a human eye, with red blood vessels on an orange retina",
           (("What part of the body is shown?", "The retina of an eye."),),
           "skimage", "retina.jpg"),
    Source("page", "a scanned page of printed text with a heading about region-based segmentation",
           (("What is shown?", "A page of printed text."),), "skimage", "page.png"),
    Source("chalk", "handwritten mathematical formulas on a grey surface, photographed at an angle",
           (("What is written?", "Mathematical formulas."),), "skimage", "text.png"),
    Source("pagoda", "a tall Chinese pagoda with red columns on a wooded hill, with a lake behind it",
           (("What building is shown?", "A Chinese pagoda."), ("What is behind the building?", "A lake.")),
           "sklearn", "china.jpg"),
    Source("dahlia", "an orange dahlia flower in front of dark green leaves",
           (("What flower is shown?", "A dahlia."), ("What colour is the flower?", "Orange.")),
           "sklearn", "flower.jpg"),
)

# Held out of every training split; the test sets are built from these only.
TEST_PHOTOS = ("coffee", "cameraman", "gravel", "dahlia")

_SHAPES = ("circle", "square", "triangle")
_COLOURS = {"red": (200, 40, 40), "yellow": (230, 200, 40), "blue": (40, 80, 200), "white": (240, 240, 240),
            "purple": (140, 60, 170)}
_SKIES = {"blue": ((90, 140, 220), (200, 225, 250)), "orange": ((230, 120, 50), (250, 210, 150)),
          "grey": ((110, 115, 125), (200, 200, 205))}
_GROUNDS = {"green": (60, 130, 60), "brown": (120, 85, 50), "sandy": (210, 185, 130)}


def draw_scene(seed: int, size: tuple[int, int] = (320, 240)) -> tuple[Image.Image, str, tuple]:
    """A drawn scene (gradient sky, textured ground, a few shapes) with its caption and questions."""
    rng = np.random.default_rng(seed)
    w, h = size
    sky_name = list(_SKIES)[rng.integers(len(_SKIES))]
    ground_name = list(_GROUNDS)[rng.integers(len(_GROUNDS))]
    shape = _SHAPES[rng.integers(len(_SHAPES))]
    colour = list(_COLOURS)[rng.integers(len(_COLOURS))]
    n = int(rng.integers(1, 5))
    top, bottom = (np.array(c, dtype=float) for c in _SKIES[sky_name])
    horizon = int(h * rng.uniform(0.5, 0.7))
    t = np.linspace(0, 1, horizon)[:, None, None]
    arr = np.zeros((h, w, 3))
    arr[:horizon] = top * (1 - t) + bottom * t
    ground = np.array(_GROUNDS[ground_name], dtype=float)
    arr[horizon:] = ground + rng.normal(0, 12, (h - horizon, w, 3))  # texture, so blur and noise are visible
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for i in range(n):
        cx = int(w * (i + 1) / (n + 1))
        cy = int(rng.uniform(0.25, 0.55) * h)
        r = int(rng.uniform(0.06, 0.1) * w)
        box = (cx - r, cy - r, cx + r, cy + r)
        fill, edge = _COLOURS[colour], (20, 20, 20)
        if shape == "circle":
            d.ellipse(box, fill=fill, outline=edge, width=2)
        elif shape == "square":
            d.rectangle(box, fill=fill, outline=edge, width=2)
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill, outline=edge)
    plural = shape if n == 1 else f"{shape}s"
    caption = f"a drawn scene with a {sky_name} sky, {ground_name} ground and {n} {colour} {plural}"
    questions = ((f"How many {shape}s are in the picture?", str(n)),
                 (f"What colour {'is the' if n == 1 else 'are the'} {plural}?", colour.capitalize() + "."),
                 ("What colour is the sky?", sky_name.capitalize() + "."))
    return img, caption, questions


def folder_sources(folder: str | Path) -> list[Source]:
    """A user's folder of pristine photos (DIV2K, KADIS-700k style), one source per file, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"photos folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif",
                                                                        ".tiff", ".webp"))
    if not files:
        raise FileNotFoundError(f"no photos (png/jpg/...) in {root}")
    return [Source(f"photo-{p.relative_to(root).with_suffix('').as_posix().replace('/', '-')}", "a photograph",
                   (), filename=str(p)) for p in files]


def scene_source(seed: int) -> Source:
    _, caption, questions = draw_scene(seed)
    return Source(f"scene{seed:04d}", caption, questions, seed=seed)
