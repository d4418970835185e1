"""`qsit build dead-leaves`: drawn pristine images with power-law leaf sizes, seeded, resumable."""

import numpy as np
from PIL import Image

from data_builders.dead_leaves import draw_dead_leaves, leaf_radii
from qsit.cli import main


def test_radii_follow_the_power_law_within_their_range():
    rng = np.random.default_rng(0)
    r = leaf_radii(rng, 200_000, 2.0, 200.0, alpha=3.0)
    assert r.min() >= 2.0 and r.max() <= 200.0
    # for density ∝ r⁻³ on [2, ∞), P(r > 4) = (2/4)² = 1/4 (the cap at 200 changes it by 1e-4)
    assert abs((r > 4).mean() - 0.25) < 0.01


def test_images_are_seeded_covered_and_textured():
    a, b, c = draw_dead_leaves(1, size=96), draw_dead_leaves(1, size=96), draw_dead_leaves(2, size=96)
    assert a.size == (96, 96) and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    arr = np.asarray(a, dtype=float)
    # many leaves of many colours, not a flat or a single-leaf picture
    assert len(np.unique(arr.reshape(-1, 3) // 16, axis=0)) > 50
    assert arr.std() > 20


def test_cli_writes_and_keeps_images(capsys, tmp_path):
    out = tmp_path / "leaves"
    args = ["build", "dead-leaves", "--out", str(out), "--size", "64"]
    assert main([*args, "--count", "2"]) == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["dead-leaves-0000.png", "dead-leaves-0001.png"]
    assert Image.open(files[0]).size == (64, 64)
    assert "2 dead-leaves images" in capsys.readouterr().err
    # an interrupted run resumes: an image already written is not drawn again
    stamp = files[0].stat().st_mtime_ns
    assert main([*args, "--count", "3"]) == 0
    assert files[0].stat().st_mtime_ns == stamp and len(list(out.glob("*.png"))) == 3
    assert main([*args[:-1], "4", "--count", "1"]) != 0
    err = capsys.readouterr().err
    assert "--size of at least 16" in err and "Traceback" not in err
