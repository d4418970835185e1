"""Every awkward or broken image is either converted faithfully or refused with a named reason."""

import io

import numpy as np
import pytest
from PIL import Image

from qsit.images import ImageLoadError, find_images, load_image


def test_sixteen_bit_is_scaled_not_clipped(odd_images):
    loaded = load_image(odd_images["16bit"])
    arr = np.asarray(loaded.image)
    assert loaded.image.mode == "RGB"
    # A clipped conversion would turn almost everything white; scaling keeps the ramp.
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255
    assert 100 < arr.mean() < 155
    assert any("high bit depth" in n for n in loaded.notes)


def test_alpha_is_composited_on_white(odd_images):
    loaded = load_image(odd_images["alpha"])
    assert loaded.image.mode == "RGB"
    assert np.asarray(loaded.image).min() == 255


@pytest.mark.parametrize("key", ["cmyk", "palette"])
def test_other_modes_become_rgb(odd_images, key):
    loaded = load_image(odd_images[key])
    assert loaded.image.mode == "RGB"
    assert loaded.notes


def test_exif_orientation_is_applied(odd_images):
    loaded = load_image(odd_images["exif"])
    assert loaded.image.size == (48, 64)  # stored 64x48, displayed rotated
    assert any("EXIF orientation 6" in n for n in loaded.notes)


def test_animated_gif_uses_first_frame_and_says_so(odd_images):
    loaded = load_image(odd_images["gif"])
    assert loaded.image.size == (32, 32)
    assert "first of 3 frames" in " ".join(loaded.notes)


@pytest.mark.parametrize(
    "key, message",
    [
        ("missing", "no such file"),
        ("empty", "empty file"),
        ("text", "not a recognised image format"),
        ("truncated", "truncated or corrupt"),
        ("bomb", "decompression bomb"),
    ],
)
def test_bad_files_are_refused_with_the_reason(bad_images, key, message):
    with pytest.raises(ImageLoadError, match=message) as err:
        load_image(bad_images[key])
    assert str(bad_images[key]) in str(err.value)


def test_pixel_limit_is_configurable(photo):
    with pytest.raises(ImageLoadError, match="exceeds the limit of 1,000"):
        load_image(photo, max_pixels=1000)


def test_bytes_and_pil_inputs(photo):
    data = photo.read_bytes()
    from_bytes = load_image(data, name="upload")
    from_pil = load_image(Image.open(io.BytesIO(data)))
    assert from_bytes.name == "upload"
    assert np.array_equal(np.asarray(from_bytes.image), np.asarray(from_pil.image))
    with pytest.raises(ImageLoadError, match="0 bytes"):
        load_image(b"")


def test_find_images_expands_folders_and_globs(tmp_path, photo):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "sub" / "a.png")
    (tmp_path / "readme.txt").write_text("x")
    paths, problems = find_images([tmp_path, str(tmp_path / "*.jpg"), tmp_path / "nope.png"])
    assert sorted(p.name for p in paths) == ["a.png", "china.jpg"]
    assert problems == [f"{tmp_path / 'nope.png'}: no such file or directory"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "directory has no images" in find_images([empty])[1][0]
