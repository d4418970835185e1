"""Small helpers shared by tests."""

import contextlib
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image


def noise_image(h, w, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


@contextlib.contextmanager
def interrupt_after_first(monkeypatch, owner, name: str, when=lambda *args: True):
    """Ctrl-C, simulated: ``owner.name`` (a function or method that saves state) runs, and then the
    first call for which ``when(*args)`` holds raises KeyboardInterrupt, as a user's Ctrl-C would
    right after that save."""
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        if when(*(args[1:] if isinstance(owner, type) else args)):
            monkeypatch.setattr(owner, name, original)
            raise KeyboardInterrupt(f"interrupted after {name}")
        return result

    monkeypatch.setattr(owner, name, wrapped)
    try:
        yield
    finally:
        monkeypatch.setattr(owner, name, original)


def load_script(name: str):
    """``scripts/<name>.py`` as a module (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
