"""Shared fixtures: a tiny LLaVA-OneVision checkpoint of the real classes, and test images.

The checkpoint is built once per session with ``save_pretrained`` and always
loaded back through ``Assessor.from_pretrained`` — the path a 7B hub
checkpoint takes.
"""

import os

import numpy as np
import pytest
from PIL import Image

from tests.helpers import noise_image

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from qsit.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="session")
def assessor(tiny_checkpoint):
    from qsit.assessor import Assessor

    return Assessor.from_pretrained(tiny_checkpoint)


@pytest.fixture
def photo(tmp_path):
    """A real photograph (the CC BY sample that ships with scikit-learn), as a JPEG file."""
    from sklearn.datasets import load_sample_image

    path = tmp_path / "china.jpg"
    Image.fromarray(load_sample_image("china.jpg")).save(path, quality=90)
    return path


@pytest.fixture
def odd_images(tmp_path):
    """Files that are valid images in awkward forms, keyed by what is awkward about them."""
    files = {}
    rgb = noise_image(48, 64, seed=1)
    # 16-bit greyscale whose values use the whole 0..65535 range.
    ramp = (np.linspace(0, 65535, 48 * 64).reshape(48, 64)).astype(np.uint16)
    files["16bit"] = tmp_path / "gray16.png"
    Image.fromarray(ramp).save(files["16bit"])
    files["cmyk"] = tmp_path / "cmyk.jpg"
    rgb.convert("CMYK").save(files["cmyk"])
    files["palette"] = tmp_path / "palette.png"
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(files["palette"], transparency=0)
    files["alpha"] = tmp_path / "alpha.png"
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: must come out white
    rgba.save(files["alpha"])
    files["exif"] = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    rgb.save(files["exif"], exif=exif)
    files["gif"] = tmp_path / "animated.gif"
    frames = [noise_image(32, 32, seed=s).convert("P") for s in range(3)]
    frames[0].save(files["gif"], save_all=True, append_images=frames[1:], duration=50, loop=0)
    return files


@pytest.fixture
def bad_images(tmp_path):
    """Files that are not usable images, keyed by what is wrong with them."""
    files = {}
    files["missing"] = tmp_path / "does-not-exist.jpg"
    files["empty"] = tmp_path / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["text"] = tmp_path / "notes.jpg"
    files["text"].write_text("this is not a JPEG\n")
    files["truncated"] = tmp_path / "truncated.jpg"
    full = tmp_path / "full.jpg"
    noise_image(256, 256, seed=2).save(full, quality=95)
    data = full.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 3])
    full.unlink()
    files["bomb"] = tmp_path / "bomb.png"
    # 1-bit, 20000 x 10000 = 2e8 pixels (> 2x Pillow's limit) in a few kB on disk.
    Image.new("1", (20000, 10000)).save(files["bomb"])
    return files


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """A small offline corpus (D1, D2, D3 and test sets), built once per session."""
    from data_builders.synthetic import SyntheticConfig, build_synthetic

    out = tmp_path_factory.mktemp("corpus")
    build_synthetic(out, SyntheticConfig(size=48, crops_per_photo=1, ladders_per_crop=1, train_scenes=2,
                                         test_scenes=1, seed=1), progress=False)
    return out


@pytest.fixture(scope="session")
def teacher_weights(tmp_path_factory):
    """A MobileNetV2 state dict of torchvision's own layout (random weights: no download here)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "mobilenet_v2.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), path)
    return path
