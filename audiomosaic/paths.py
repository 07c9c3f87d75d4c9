"""Where things live: the repository root, built corpora and the download cache.

Defaults are derived from the repository (the folder holding ``pyproject.toml``) so that notebooks, the CLI and
the tests agree without configuration; environment variables override them for other machines:

- ``AUDIOMOSAIC_DATA``: the built corpus folder (used as is, whatever the recipe);
- ``AUDIOMOSAIC_CACHE``: downloaded/extracted third-party packages (Debian data packages).
"""
from __future__ import annotations

import os
from pathlib import Path


def repo_root(start: str | Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: this package) that holds ``pyproject.toml``.

    Returns None when the package is installed outside a checkout (e.g. a wheel in site-packages).
    """
    here = Path(start) if start is not None else Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def _base() -> Path:
    root = repo_root()
    return root / "data" if root is not None else Path.home() / ".cache" / "audiomosaic"


def data_dir(recipe: str = "default") -> Path:
    """Built corpus folder: ``$AUDIOMOSAIC_DATA`` if set, else ``<repo>/data/built/<recipe>``."""
    env = os.environ.get("AUDIOMOSAIC_DATA", "")
    return Path(env) if env else _base() / "built" / recipe


def cache_dir() -> Path:
    """Download cache: ``$AUDIOMOSAIC_CACHE`` if set, else ``<repo>/data/built/_cache`` (git-ignored)."""
    env = os.environ.get("AUDIOMOSAIC_CACHE", "")
    return Path(env) if env else _base() / "built" / "_cache"


def repo_path(path: str | os.PathLike[str]) -> Path:
    """A notebook path parameter as an absolute path: relative paths are relative to the repository root."""
    p = Path(path)
    if p.is_absolute():
        return p
    root = repo_root()
    return (root if root is not None else Path.cwd()) / p
