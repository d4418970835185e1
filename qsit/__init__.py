"""qsit: teach large multimodal models to score image quality and explain it, in one model.

The public objects are imported lazily so that ``import qsit`` (and ``qsit --help``)
stays fast and free of side effects; torch and transformers load on first use.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Assessor": "qsit.assessor",
    "Assessment": "qsit.assessor",
    "ScoreResult": "qsit.assessor",
    "ModelLoadError": "qsit.assessor",
    "LEVELS": "qsit.levels",
    "scores_to_levels": "qsit.levels",
    "expected_score": "qsit.levels",
    "load_image": "qsit.images",
    "ImageLoadError": "qsit.images",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'qsit' has no attribute {name!r}")
