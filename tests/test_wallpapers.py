"""`qsit build wallpapers`: photos picked from unpacked Debian packages, resized, resumable."""

import os

import numpy as np
import pytest
from PIL import Image

from data_builders.common import BuildError
from data_builders.wallpapers import LONGEST_SIDE, WALLPAPERS, extract_photos, fetch, photo_path


def _image(path, size, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _unpacked_plasma(root):
    """A plasma-workspace-wallpapers tree: each wallpaper in several sizes, the largest marked 200."""
    for rel in WALLPAPERS["plasma-workspace-wallpapers"].values():
        _image(root / rel / "1280x800.jpg", (1280, 800), 50)
        _image(root / rel / "2560x1600.png", (2560, 1600), 200)
        _image(root / rel / "720x1440.jpg", (720, 1440), 50)
    return root


def test_the_largest_size_is_taken_and_shrunk_to_the_longest_side(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    written = extract_photos(_unpacked_plasma(tmp_path / "deb"), "plasma-workspace-wallpapers", out)
    assert len(written) == len(WALLPAPERS["plasma-workspace-wallpapers"]) == 12
    for path in written:
        im = Image.open(path)
        assert im.size == (LONGEST_SIDE, 640) and im.mode == "RGB"
        assert abs(int(np.asarray(im).mean()) - 200) <= 1  # the 2560-px file, not a smaller size
    assert not list(out.glob("*.part.png"))


def test_photos_already_written_are_kept(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    first = photo_path(out, "mate-backgrounds", "Aqua")
    _image(first, (300, 200), 10)
    before = first.stat().st_mtime_ns
    deb = tmp_path / "deb"
    for rel in WALLPAPERS["mate-backgrounds"].values():
        _image(deb / rel, (800, 600), 90)
    written = extract_photos(deb, "mate-backgrounds", out)
    assert first in written and first.stat().st_mtime_ns == before
    assert Image.open(photo_path(out, "mate-backgrounds", "Wood")).size == (800, 600)  # never enlarged


def test_a_missing_photo_in_the_package_is_named(tmp_path):
    with pytest.raises(BuildError, match="mate-backgrounds has no wallpaper 'Aqua'"):
        extract_photos(tmp_path / "empty", "mate-backgrounds", tmp_path)


def test_without_apt_the_error_says_what_is_needed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, no dpkg-deb
    with pytest.raises(BuildError, match="apt-get not found.*Debian"):
        fetch("mate-backgrounds", tmp_path)
    assert os.listdir(tmp_path) == []


def test_more_packages_are_opt_in_and_an_unknown_one_is_named(tmp_path):
    from data_builders.wallpapers import DEFAULT_PACKAGES, build_wallpapers

    assert DEFAULT_PACKAGES == ("mate-backgrounds", "plasma-workspace-wallpapers")  # qsit-tiny's training photos
    lomiri = WALLPAPERS["lomiri-wallpapers-16.04"]
    assert len(lomiri) + len(WALLPAPERS["lomiri-wallpapers-20.04"]) == 13
    deb = tmp_path / "deb"
    for rel in lomiri.values():
        _image(deb / rel, (3000, 2000), 120)
    out = tmp_path / "photos"
    out.mkdir()
    written = extract_photos(deb, "lomiri-wallpapers-16.04", out)
    assert sorted(p.name for p in written) == sorted(f"lomiri-{n}.png" for n in lomiri)
    assert {Image.open(p).size for p in written} == {(LONGEST_SIDE, 683)}
    # Photos already there: nothing fetched, the listed package's photos returned.
    assert sorted(build_wallpapers(out, ("lomiri-wallpapers-16.04",))) == sorted(written)
    with pytest.raises(BuildError, match="no photos known in ubuntu-wallpapers; known packages: mate-backgrounds"):
        build_wallpapers(out, ("ubuntu-wallpapers",))
