"""Synthetic distortions: the 15 of ImageNet-C (used by Q-SiT) plus over- and under-exposure.

Each takes an RGB float image in [0, 1] (H, W, 3), a severity 1..5 and a
NumPy random generator, and returns a new image in [0, 1]. They are written
on NumPy, SciPy and Pillow because ``imagecorruptions`` crashes on NumPy 2 /
scikit-image 0.26; the parameters follow the same spirit (five increasing
steps) but are this project's own. ``apply`` can confine a distortion to a
region (left/right/top/bottom part) with a soft edge, so a description can
say where it is.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage, signal

REGIONS = ("left part", "right part", "top part", "bottom part")


def _fractal_noise(h: int, w: int, rng: np.random.Generator, octaves: int = 5, base: int = 4) -> np.ndarray:
    """Smooth multi-scale noise in [0, 1] (sum of upsampled random grids, halving amplitude per octave)."""
    out = np.zeros((h, w), dtype=np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = base * 2**o
        grid = rng.random((n, n)).astype(np.float32)
        up = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), dtype=np.float32)
        out += amp * up
        total += amp
        amp /= 2
    out /= total
    return (out - out.min()) / max(float(np.ptp(out)), 1e-6)


def _per_channel(x: np.ndarray, fn) -> np.ndarray:
    return np.stack([fn(x[..., c]) for c in range(x.shape[-1])], axis=-1)


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    kernel = kernel / kernel.sum()
    return _per_channel(x, lambda ch: signal.fftconvolve(np.pad(ch, kernel.shape[0] // 2 + 1, mode="reflect"),
                                                          kernel, mode="same")[
        kernel.shape[0] // 2 + 1: -(kernel.shape[0] // 2 + 1), kernel.shape[1] // 2 + 1: -(kernel.shape[1] // 2 + 1)])


def _disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    k = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    return ndimage.gaussian_filter(k, 0.5)


def _line(length: int, angle_deg: float) -> np.ndarray:
    k = np.zeros((length, length))
    c = (length - 1) / 2
    t = np.linspace(-c, c, 4 * length)
    a = np.deg2rad(angle_deg)
    xs = np.clip(np.round(c + t * np.cos(a)).astype(int), 0, length - 1)
    ys = np.clip(np.round(c - t * np.sin(a)).astype(int), 0, length - 1)
    k[ys, xs] = 1.0
    return k


def _to_linear(x):
    return np.power(np.clip(x, 0, 1), 2.2)


def _from_linear(x):
    return np.power(np.clip(x, 0, 1), 1 / 2.2)


def gaussian_noise(x, s, rng):
    return x + rng.normal(0, [0.03, 0.05, 0.08, 0.12, 0.18][s - 1], x.shape)


def shot_noise(x, s, rng):
    lam = [80, 40, 20, 10, 5][s - 1]
    return rng.poisson(np.clip(x, 0, 1) * lam) / lam


def impulse_noise(x, s, rng):
    amount = [0.01, 0.03, 0.05, 0.09, 0.15][s - 1]
    u = rng.random(x.shape[:2])
    y = x.copy()
    y[u < amount / 2] = 0.0
    y[u > 1 - amount / 2] = 1.0
    return y


def defocus_blur(x, s, rng):
    return _convolve(x, _disk([1.0, 2.0, 3.0, 4.5, 6.0][s - 1]))


def motion_blur(x, s, rng):
    return _convolve(x, _line([5, 9, 13, 19, 25][s - 1], float(rng.uniform(0, 180))))


def glass_blur(x, s, rng):
    sigma, delta = [(0.6, 1), (0.8, 2), (1.0, 2), (1.2, 3), (1.5, 4)][s - 1]
    y = _per_channel(x, lambda ch: ndimage.gaussian_filter(ch, sigma))
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    yy = np.clip(yy + rng.integers(-delta, delta + 1, (h, w)), 0, h - 1)
    xx = np.clip(xx + rng.integers(-delta, delta + 1, (h, w)), 0, w - 1)
    return _per_channel(y[yy, xx], lambda ch: ndimage.gaussian_filter(ch, sigma))


def zoom_blur(x, s, rng):
    top = [1.06, 1.11, 1.16, 1.22, 1.30][s - 1]
    h, w = x.shape[:2]
    img = Image.fromarray((np.clip(x, 0, 1) * 255).astype(np.uint8))
    acc = x.astype(np.float64).copy()
    zooms = np.arange(1.02, top + 1e-9, 0.02)
    for z in zooms:
        zw, zh = int(round(w * z)), int(round(h * z))
        big = np.asarray(img.resize((zw, zh), Image.BILINEAR), dtype=np.float64) / 255
        ox, oy = (zw - w) // 2, (zh - h) // 2
        acc += big[oy:oy + h, ox:ox + w]
    return acc / (len(zooms) + 1)


def snow(x, s, rng):
    density, length, veil = [(0.004, 5, 0.1), (0.008, 7, 0.18), (0.012, 9, 0.25), (0.018, 11, 0.32),
                             (0.025, 13, 0.4)][s - 1]
    h, w = x.shape[:2]
    flakes = (rng.random((h, w)) < density).astype(np.float64)
    flakes = ndimage.grey_dilation(flakes, size=(2, 2))
    streaks = signal.fftconvolve(flakes, _line(length, float(rng.uniform(60, 120))), mode="same")
    streaks = np.clip(streaks / max(streaks.max(), 1e-6) * 1.5, 0, 1)[..., None]
    grey = x.mean(-1, keepdims=True)
    hazy = (1 - veil) * x + veil * np.maximum(x, grey * 1.5 + 0.5)
    return hazy + streaks * 0.9


def frost(x, s, rng):
    strength = [0.3, 0.42, 0.55, 0.68, 0.8][s - 1]
    h, w = x.shape[:2]
    n = _fractal_noise(h, w, rng, octaves=6, base=8)
    ridges = np.power(1 - np.abs(2 * n - 1), 4)[..., None]  # thin crystal-like lines
    ice = np.array([0.88, 0.94, 1.0])
    cover = strength * (0.35 + 0.65 * ridges)  # a milky layer everywhere, denser on the crystals
    return (1 - cover) * x + cover * ice


def fog(x, s, rng):
    amount = [0.25, 0.4, 0.55, 0.7, 0.85][s - 1]
    h, w = x.shape[:2]
    f = _fractal_noise(h, w, rng, octaves=4, base=2)[..., None]
    top = x.max()
    return (x + amount * f) * top / (top + amount)


def brightness(x, s, rng):
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(np.clip(x, 0, 1))
    hsv[..., 2] = np.clip(hsv[..., 2] + [0.1, 0.2, 0.3, 0.4, 0.5][s - 1], 0, 1)
    return hsv2rgb(hsv)


def contrast(x, s, rng):
    c = [0.6, 0.45, 0.32, 0.22, 0.14][s - 1]
    mean = x.mean(axis=(0, 1), keepdims=True)
    return (x - mean) * c + mean


def elastic(x, s, rng):
    alpha, sigma = [(2.0, 6), (3.5, 6), (5.0, 5), (7.0, 5), (9.0, 4)][s - 1]
    h, w = x.shape[:2]
    scale = max(h, w) / 128
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma * scale) * alpha * scale * sigma
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma * scale) * alpha * scale * sigma
    yy, xx = np.mgrid[0:h, 0:w]
    coords = [np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1)]
    return _per_channel(x, lambda ch: ndimage.map_coordinates(ch, coords, order=1, mode="reflect"))


def pixelate(x, s, rng):
    f = [0.6, 0.45, 0.33, 0.25, 0.18][s - 1]
    h, w = x.shape[:2]
    img = Image.fromarray((np.clip(x, 0, 1) * 255).astype(np.uint8))
    small = img.resize((max(1, int(w * f)), max(1, int(h * f))), Image.BOX)
    return np.asarray(small.resize((w, h), Image.NEAREST), dtype=np.float64) / 255


def jpeg(x, s, rng):
    buf = io.BytesIO()
    Image.fromarray((np.clip(x, 0, 1) * 255).astype(np.uint8)).save(buf, "JPEG", quality=[30, 18, 12, 8, 5][s - 1])
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.float64) / 255


def overexposure(x, s, rng):
    return _from_linear(_to_linear(x) * [1.5, 2.0, 2.8, 4.0, 6.0][s - 1])


def underexposure(x, s, rng):
    return _from_linear(_to_linear(x) * [0.5, 0.3, 0.18, 0.1, 0.05][s - 1])


@dataclass(frozen=True)
class Distortion:
    key: str
    name: str
    """How descriptions name it."""
    family: str
    fn: Callable
    cause: str
    fix: str
    regional: bool = True
    """Whether it can sensibly be confined to part of the image."""


DISTORTIONS: dict[str, Distortion] = {d.key: d for d in (
    Distortion("gaussian_noise", "gaussian noise", "noise", gaussian_noise,
               "Sensor noise from a high ISO setting or a small sensor in low light.",
               "Shoot with more light or a lower ISO, or apply a denoising filter."),
    Distortion("shot_noise", "shot noise", "noise", shot_noise,
               "Too few photons reached the sensor, as in dim scenes with short exposures.",
               "Use a longer exposure or more light; denoising software can reduce it."),
    Distortion("impulse_noise", "salt-and-pepper noise", "noise", impulse_noise,
               "Faulty sensor pixels or transmission errors.", "A median filter removes most of it."),
    Distortion("defocus_blur", "defocus blur", "blur", defocus_blur,
               "The lens was focused at the wrong distance.", "Refocus on the subject, or use autofocus."),
    Distortion("glass_blur", "glass blur", "blur", glass_blur,
               "The scene was shot through frosted or textured glass.",
               "Shoot without the glass in between, or press the lens against clear glass."),
    Distortion("motion_blur", "motion blur", "blur", motion_blur,
               "The camera or the subject moved during the exposure.",
               "Use a faster shutter speed, a tripod, or image stabilisation."),
    Distortion("zoom_blur", "zoom blur", "blur", zoom_blur,
               "The zoom changed during the exposure.", "Keep the zoom still while the shutter is open.",
               regional=False),
    Distortion("snow", "snow", "weather", snow,
               "Falling snow was between the camera and the scene.",
               "Use a lens hood and a faster shutter, or shoot from shelter."),
    Distortion("frost", "frost", "weather", frost,
               "Ice crystals formed on the lens or the window.", "Warm and clean the lens before shooting."),
    Distortion("fog", "fog", "weather", fog,
               "Haze or fog scattered the light and lowered contrast.",
               "Get closer to the subject, or use dehazing in editing."),
    Distortion("brightness", "excessive brightness", "exposure", brightness,
               "The image was brightened too much in processing.", "Lower the brightness or the exposure."),
    Distortion("contrast", "low contrast", "exposure", contrast,
               "Flat lighting or a wrong tone curve compressed the tones.",
               "Raise the contrast or adjust levels and curves."),
    Distortion("elastic", "elastic deformation", "geometry", elastic,
               "The image was warped, as by a rolling shutter or a poor lens correction.",
               "Avoid fast panning with rolling-shutter cameras; correct lens distortion properly.",
               regional=False),
    Distortion("pixelate", "pixelation", "compression", pixelate,
               "The image was upscaled from a much smaller version.",
               "Use the original resolution, or a learned super-resolution tool."),
    Distortion("jpeg", "jpeg compression artifacts", "compression", jpeg,
               "The image was saved with a very low JPEG quality.",
               "Save at a higher quality, or use a JPEG artifact removal tool."),
    Distortion("overexposure", "overexposure", "exposure", overexposure,
               "Too much light reached the sensor, so highlights are blown out.",
               "Use a shorter exposure, a smaller aperture, or exposure compensation."),
    Distortion("underexposure", "underexposure", "exposure", underexposure,
               "Too little light reached the sensor, so the image is dark.",
               "Use a longer exposure, a wider aperture, more light, or brighten it carefully."),
)}


FAMILY_NAMES = {
    "noise": "noise",
    "blur": "blur",
    "weather": "weather effects",
    "exposure": "exposure or contrast problems",
    "geometry": "geometric distortion",
    "compression": "compression artifacts",
}
"""How a question's option names each ``Distortion.family`` as a whole."""
assert set(FAMILY_NAMES) == {d.family for d in DISTORTIONS.values()}
FAMILY_MEMBERS = {f: [d.name for d in DISTORTIONS.values() if d.family == f] for f in FAMILY_NAMES}
"""The names of each family's distortions, in ``DISTORTIONS`` order."""


def region_mask(h: int, w: int, region: str, soft: float = 0.08) -> np.ndarray:
    """1 inside the region, 0 outside, with a linear ramp of ``soft`` × size across the edge."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; known: {', '.join(REGIONS)}")
    horizontal = region in ("left part", "right part")
    n = w if horizontal else h
    t = np.arange(n) / max(n - 1, 1)
    ramp = np.clip((0.5 - t) / soft + 0.5, 0, 1)  # 1 on the first half
    if region in ("right part", "bottom part"):
        ramp = ramp[::-1]
    return np.broadcast_to(ramp[None, :] if horizontal else ramp[:, None], (h, w))[..., None]


def apply(x: np.ndarray, key: str, severity: int, rng: np.random.Generator, region: str | None = None) -> np.ndarray:
    """Distort ``x`` (float RGB in [0, 1]) with ``key`` at ``severity`` 1..5, optionally in one region only."""
    if key not in DISTORTIONS:
        raise ValueError(f"unknown distortion {key!r}; known: {', '.join(DISTORTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1..5, got {severity}")
    y = np.clip(DISTORTIONS[key].fn(x.astype(np.float64), severity, rng), 0, 1)
    if region is not None:
        m = region_mask(*x.shape[:2], region)
        y = m * y + (1 - m) * x
    return y
