"""What a run writes and restores, shared by the pre-training, probe and fine-tune engines.

- a run directory ``runs/<kind>-<preset>-<timestamp>`` with ``config.json`` (resolved config + derived values);
- ``metrics.jsonl``: one JSON object per logging step; wall-clock fields (:data:`WALL_CLOCK_KEYS`) are separate keys
  so that runs can be compared bitwise on everything else. On resume the log is cut back to the checkpoint;
- :class:`DeviceMeter`: running sums kept on the device, read with one host synchronisation per logging step;
- every random state a step consumes (python, numpy, torch CPU/CUDA, explicit generators) as plain tensors and
  numbers, so resume checkpoints load with ``torch.load(weights_only=True)``;
- a tqdm progress bar that can be switched off.
"""
from __future__ import annotations

import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from audiomosaic.config import to_dict
from audiomosaic.paths import repo_root
from audiomosaic.train.checkpoint import git_sha

WALL_CLOCK_KEYS = ("time", "clips_per_s")  # vary between identical runs; everything else is reproducible


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def default_run_dir(kind: str, preset: str, root: str | Path | None = None) -> Path:
    """``<repo>/runs/<kind>-<preset>-<timestamp>`` (``./runs`` outside a checkout)."""
    base = Path(root) if root is not None else (repo_root() or Path.cwd()) / "runs"
    return base / f"{kind}-{preset}-{timestamp()}"


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON to a temporary file and rename it over ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def environment() -> dict[str, str]:
    """Versions recorded next to every config (docs/notebooks.md §9)."""

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "git_sha": git_sha(), "host": platform.node()}


def write_config(run_dir: str | Path, cfg: Any, derived: Mapping[str, Any]) -> Path:
    """``run_dir/config.json`` = {"config": the resolved config, "derived": lr, steps, ..., "environment": ...}."""
    return write_json_atomic(Path(run_dir) / "config.json",
                             {"config": to_dict(cfg), "derived": dict(derived), "environment": environment()})


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config`` section of ``run_dir/config.json`` (a plain dict for ``from_dict``)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ValueError(f"{path} not found: not a run directory")
    return json.loads(path.read_text())["config"]


# ----------------------------------------------------------------------------------------------------- metrics

def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a metrics.jsonl (a torn last line, from a kill mid-write, is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class MetricsLog:
    """Append-only ``metrics.jsonl`` writer (rank 0 only: ``enabled=False`` elsewhere)."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def write(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:  # reopened per line: a SIGKILL loses at most the line being written
            fh.write(json.dumps(dict(record)) + "\n")

    def truncate(self, last_step: int) -> None:
        """Keep only the records up to ``last_step`` (resume: the lines after the checkpoint are replayed)."""
        if not self.enabled:
            return
        keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= last_step]
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        os.replace(tmp, self.path)


class DeviceMeter:
    """Means of scalar tensors over a logging window, accumulated on their device (no host sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, values: Mapping[str, torch.Tensor]) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def read(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
             totals: Mapping[str, float] | None = None) -> dict[str, float]:
        """Window means, then reset. The only host sync: one ``tolist``.

        Args:
            reduce: applied to the stacked values, e.g. a mean over ranks.
            totals: host-side numbers reduced along with the means (one collective for everything).
        """
        keys = sorted(self.sums)
        means = [self.sums[k] / max(self.count, 1) for k in keys]
        device = means[0].device if means else torch.device("cpu")
        extra = list((totals or {}).items())
        stacked = torch.cat([torch.stack(means) if means else torch.zeros(0, device=device),
                             torch.tensor([v for _, v in extra], dtype=torch.float32, device=device)])
        values = (reduce(stacked) if reduce is not None else stacked).tolist()
        self.sums, self.count = {}, 0
        return dict(zip(keys + [k for k, _ in extra], values))

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {k: v.cpu() for k, v in self.sums.items()}, "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device | str = "cpu") -> None:
        self.sums = {k: v.to(device) for k, v in state["sums"].items()}
        self.count = int(state["count"])


# ------------------------------------------------------------------------------------------------- RNG state

def capture_rng(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every random state a training step may consume, as tensors/ints (``weights_only``-loadable)."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng`; ``generators`` are restored in place, by name.

    Raises:
        ValueError: a generator named in ``generators`` is missing from the saved state.
    """
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy().astype(np.uint32),
                                                               "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in (generators or {}).items():
        if name not in state["generators"]:
            raise ValueError(f"saved RNG state has no generator {name!r}; saved: {sorted(state['generators'])}")
        g.set_state(state["generators"][name])


# -------------------------------------------------------------------------------------------------- progress

def progress_bar(total: int, enabled: bool = True, desc: str = "", initial: int = 0):
    """tqdm.auto bar (notebook widget or text); ``enabled=False`` for batch jobs and papermill (docs/notebooks.md §11)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, mininterval=1.0,
                leave=False)
