"""Run the notebooks with papermill: one parameter file per scale, shared by ``make smoke``, the tests and GPU runs.

Parameter files (``notebooks/params/{smoke,cpu,gpu,paper}.yaml``) hold a ``common`` section and one optional
section per notebook, named after it (``10_pretrain``)::

    common: {preset: smoke, smoke: true}     # to every notebook that declares the key
    10_pretrain: {mask_mode: tf}            # to 10_pretrain only; every key must be one of its parameters

A notebook receives ``common`` (only the keys it declares) updated by its own section. A key that no notebook
declares, or a section key its notebook does not declare, is a ValueError: papermill itself only warns about
unknown parameters (docs/notebooks.md §3). So is a ``preset`` that is not in the preset tables its notebook reads
(:data:`PRESET_TABLES`).

CLI: ``python -m audiomosaic run-notebooks --params notebooks/params/smoke.yaml --out runs/exec [NB ...]``.
Notebooks run with the ``python3`` kernel in their own folder (as JupyterLab and nbval do); path parameters are
resolved against the repository root by :func:`repo_path`, so they mean the same from any working directory.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from audiomosaic.lab.analysis import read_metrics
from audiomosaic.lab.figures import plot_curves, png_bytes
from audiomosaic.paths import repo_path, repo_root  # noqa: F401 - repo_path: the notebooks' import
from audiomosaic.presets import REGISTRIES

COMMON = "common"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
# The preset tables (audiomosaic.presets.REGISTRIES) in which a notebook looks up its `preset` parameter; a notebook
# not listed reads only the pre-training table. 40/41 evaluate every point with the same preset name (a probe or a
# fine-tune), 50 takes the probe preset's task.
PRESET_TABLES: dict[str, tuple[str, ...]] = {
    "20_linear_probe": ("probe",),
    "30_finetune": ("finetune",),
    "40_ablation_masking": ("train", "probe", "finetune"),
    "41_ablation_batch_size": ("train", "probe", "finetune"),
    "50_effective_rank": ("train", "probe"),
}


def notebook_dir() -> Path:
    """``<repo>/notebooks`` (or ``./notebooks`` outside a checkout)."""
    root = repo_root()
    return (root if root is not None else Path.cwd()) / "notebooks"


def given(overrides: Mapping[str, Any], paths: Sequence[str] = ()) -> dict[str, Any]:
    """The entries of ``overrides`` whose value is set (``""`` and None mean "keep the preset's value"); the
    values of the keys in ``paths`` become absolute paths (:func:`repo_path`), so the engines read the same files
    whatever the kernel's working directory."""
    return {k: str(repo_path(v)) if k in paths else v for k, v in overrides.items() if v not in ("", None)}


@contextlib.contextmanager
def live_plot(run_dir: str | os.PathLike, keys: Sequence[str] = ("loss", "top1", "lr"), every_s: float = 15.0,
              enabled: bool = True) -> Iterator[None]:
    """Redraw the curves of ``run_dir/metrics.jsonl`` below the running cell every ``every_s`` seconds.

    Training stays in the kernel's main thread (DataLoader workers and signals expect it); a daemon thread reads
    the log and updates one display. Disabled (for papermill/CI), the block just runs.
    """
    if not enabled:
        yield
        return
    from IPython.display import DisplayHandle, Image


    handle, stop = DisplayHandle(), threading.Event()
    handle.display(f"waiting for the first records of {run_dir}/metrics.jsonl ...")

    def redraw() -> None:
        while not stop.wait(every_s):
            try:
                handle.update(Image(data=png_bytes(plot_curves(read_metrics(run_dir), keys=keys))))
            except ValueError:  # nothing to plot yet
                continue

    thread = threading.Thread(target=redraw, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def notebook_paths(names: Sequence[str] = (), folder: str | os.PathLike | None = None) -> list[Path]:
    """The numbered notebooks of ``folder`` in order, or those named (``10_pretrain``, ``10``, or a path).

    Raises:
        ValueError: a name that matches no notebook (the available ones are listed).
    """
    folder = Path(folder) if folder is not None else notebook_dir()
    available = sorted(folder.glob(NOTEBOOK_GLOB))
    if not names:
        return available
    out = []
    for name in names:
        if Path(name).suffix == ".ipynb" and Path(name).is_file():
            out.append(Path(name))
            continue
        hits = [p for p in available if p.stem == name or p.stem.split("_")[0] == name]
        if len(hits) != 1:
            raise ValueError(f"unknown notebook {name!r}; available: {', '.join(p.stem for p in available)}")
        out.append(hits[0])
    return out


def notebook_parameters(nb: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The notebook's parameters (papermill's inspection of its ``parameters`` cell): name -> info."""
    import papermill as pm

    return dict(pm.inspect_notebook(str(nb)))


def load_params(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read a parameter file: ``{common: {...}, <notebook stem>: {...}}`` (every section optional)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected a mapping of sections (common, <notebook>) to mappings of parameters")
    return data


def check_preset(notebook: str, preset: Any) -> None:
    """``preset`` must be an entry of every preset table that ``notebook`` reads (:data:`PRESET_TABLES`).

    Raises:
        ValueError: naming the notebook, the preset and the allowed names.
    """
    kinds = PRESET_TABLES.get(notebook, ("train",))
    allowed = [name for name in REGISTRIES[kinds[0]] if all(name in REGISTRIES[k] for k in kinds[1:])]
    if preset not in allowed:
        raise ValueError(f"{notebook}: unknown preset {preset!r}; allowed ({' and '.join(kinds)} presets): "
                         f"{', '.join(allowed)}")


def check_params(params: Mapping[str, Mapping[str, Any]], notebooks: Sequence[str | os.PathLike]) -> None:
    """Every section names a notebook, every section key is that notebook's parameter, every common key is
    declared by at least one notebook, and the ``preset`` each notebook receives is one it can resolve.

    Raises:
        ValueError: naming the offending section and keys, or the notebook and its unknown preset.
    """
    declared = {Path(nb).stem: set(notebook_parameters(nb)) for nb in notebooks}
    for section, values in params.items():
        if section == COMMON:
            unused = sorted(set(values) - set().union(*declared.values()))
            if unused:
                raise ValueError(f"common parameters {unused} are declared by no notebook")
        elif section not in declared:
            raise ValueError(f"section {section!r} names no notebook; notebooks: {', '.join(declared)}")
        elif set(values) - declared[section]:
            raise ValueError(f"{section}: {sorted(set(values) - declared[section])} are not parameters; "
                             f"allowed: {', '.join(sorted(declared[section]))}")
    for stem, names in declared.items():
        got = {**params.get(COMMON, {}), **params.get(stem, {})}
        if "preset" in names and "preset" in got:
            check_preset(stem, got["preset"])


def params_for(nb: str | os.PathLike, params: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What notebook ``nb`` receives: the common keys it declares, updated by its own section.

    Raises:
        ValueError: a key of its section that is not one of its parameters.
    """
    declared = set(notebook_parameters(nb))
    own = dict(params.get(Path(nb).stem, {}))
    unknown = sorted(set(own) - declared)
    if unknown:
        raise ValueError(f"{Path(nb).stem}: {unknown} are not parameters; allowed: {', '.join(sorted(declared))}")
    return {**{k: v for k, v in params.get(COMMON, {}).items() if k in declared}, **own}


def run_notebook(nb: str | os.PathLike, out: str | os.PathLike, params: Mapping[str, Any] | None = None,
                 timeout: int | None = 1800, log_output: bool = False) -> Any:
    """Execute ``nb`` with papermill into ``out`` (kernel ``python3``, cwd = the notebook's folder).

    Returns the executed NotebookNode. Raises papermill's ``PapermillExecutionError`` on a failing cell; the
    output notebook is written either way (keep it as the artifact).
    """
    import papermill as pm

    nb, out = Path(nb).resolve(), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return pm.execute_notebook(str(nb), str(out), parameters=dict(params or {}), kernel_name="python3",
                               cwd=str(nb.parent), progress_bar=False, log_output=log_output,
                               execution_timeout=timeout, start_timeout=120)
