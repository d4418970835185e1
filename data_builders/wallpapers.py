"""Extra pristine photographs from Debian's wallpaper packages (``qsit build wallpapers``).

    qsit build wallpapers --out data/photos/wallpapers

Downloads ``mate-backgrounds`` and ``plasma-workspace-wallpapers`` with ``apt-get download``
(no root needed, nothing is installed), unpacks them with ``dpkg-deb``, and writes the 24
real photographs among them (the rest are drawings and renders) as PNG, longest side 1,024 px:
downscaling by 2-5x hides the JPEG artefacts of the originals, so they can serve as pristine.
Photos already written are kept, so an interrupted run resumes. Licences: GPL-2+ (MATE),
LGPL-3 and CC-BY-SA-4.0 (Plasma); see ``qsit/assets/qsit-tiny/ATTRIBUTION.md``.

``--packages`` picks others: ``lomiri-wallpapers-16.04`` and ``lomiri-wallpapers-20.04`` add 13
photographs (CC-BY-4.0, CC-BY-SA-3.0/4.0 and CC0-1.0, each named in the package's copyright
file). They are not in qsit-tiny's training data, so the default is the two packages above.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

from data_builders.common import BuildError

LONGEST_SIDE = 1024

# package -> {photo name: path inside the package, or the wallpaper folder whose largest image is used}
WALLPAPERS = {
    "mate-backgrounds": {
        name: f"usr/share/backgrounds/mate/nature/{name}.jpg"
        for name in ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
                     "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower")
    },
    "plasma-workspace-wallpapers": {
        name: f"usr/share/wallpapers/{name}/contents/images"
        for name in ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
                     "Grey", "Kite", "OneStandsOut", "Path", "summer_1am", "Volna")
    },
    # Picture_1A (1,365 px: too small to shrink its JPEG artefacts away) and the renders are left out.
    "lomiri-wallpapers-16.04": {
        name.split("_by_")[0]: f"usr/share/backgrounds/{name}.jpg"
        for name in ("aitzgorri_by_Aitzol_Berasategi", "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly",
                     "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
                     "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
                     "Picture_0B_by_freespace", "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi",
                     "Wine_by_Jakkub_Mede")
    },
    "lomiri-wallpapers-20.04": {"Kleiber": "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"},
}
DEFAULT_PACKAGES = ("mate-backgrounds", "plasma-workspace-wallpapers")
"""The photographs qsit-tiny was trained on."""


def largest_image(path: Path) -> Path:
    """The file itself, or the image with the most pixels in a wallpaper's folder of sizes."""
    if path.is_file():
        return path
    files = [p for p in path.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    if not files:
        raise FileNotFoundError(f"no image in {path}")

    def pixels(p: Path) -> int:
        with Image.open(p) as im:
            return im.width * im.height

    return max(files, key=pixels)


def write_photo(src: Path, dest: Path, longest_side: int = LONGEST_SIDE) -> None:
    """RGB PNG at most ``longest_side`` px on its longest side (never enlarged)."""
    with Image.open(src) as im:
        im = im.convert("RGB")
        f = min(1.0, longest_side / max(im.size))
        if f < 1:
            im = im.resize((round(im.width * f), round(im.height * f)), Image.LANCZOS)
        tmp = dest.with_suffix(".part.png")
        im.save(tmp)
        tmp.replace(dest)  # a half-written file never looks finished


def photo_path(out: Path, package: str, name: str) -> Path:
    return out / f"{package.split('-')[0]}-{name}.png"


def extract_photos(unpacked: Path, package: str, out: Path) -> list[Path]:
    written = []
    for name, rel in WALLPAPERS[package].items():
        dest = photo_path(out, package, name)
        if not dest.is_file():
            try:
                src = largest_image(unpacked / rel)
            except FileNotFoundError:
                raise BuildError(f"{package} has no wallpaper {name!r} at {rel}: this release of the package "
                                 f"differs from the one qsit knows; put photos in {out} yourself") from None
            write_photo(src, dest)
        written.append(dest)
    return written


def fetch(package: str, workdir: Path) -> Path:
    """Download one package's .deb into ``workdir`` and unpack it; returns the unpacked root."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} not found: fetching wallpapers needs a Debian or Ubuntu system "
                             f"(or put photos in the folder yourself)")
    run = subprocess.run(["apt-get", "download", package], cwd=workdir, capture_output=True, text=True)
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if run.returncode != 0 or not debs:
        raise BuildError(f"apt-get download {package} failed: {run.stderr.strip() or run.stdout.strip()}")
    root = workdir / package
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
    return root


def build_wallpapers(out: str | Path, packages: tuple[str, ...] = DEFAULT_PACKAGES) -> list[Path]:
    """Every photo of ``packages`` in ``out``, fetching only the packages with photos missing."""
    unknown = [p for p in packages if p not in WALLPAPERS]
    if unknown:
        raise BuildError(f"no photos known in {', '.join(unknown)}; known packages: {', '.join(WALLPAPERS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for package in packages:
        photos = WALLPAPERS[package]
        if all(photo_path(out, package, n).is_file() for n in photos):
            written += [photo_path(out, package, n) for n in photos]
            continue
        with tempfile.TemporaryDirectory() as tmp:
            written += extract_photos(fetch(package, Path(tmp)), package, out)
    return written
