"""Notebooks: the committed files follow the house rules, every parameter file matches the notebooks' parameters,
and every numbered notebook runs with the smoke parameters (papermill, then nbval on the executed copies).

The executing tests are marked ``notebook``; they share one tiny corpus (the ``tiny_corpus`` fixture) and one
set of executed notebooks (the ``executed`` fixture), so each notebook runs once per session.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from audiomosaic.config import FinetuneConfig, PretrainConfig, ProbeConfig, apply_overrides, resolve
from audiomosaic.lab.runner import (check_params, given, load_params, notebook_dir, notebook_parameters,
                                   notebook_paths, params_for, repo_path, run_notebook)
from audiomosaic.presets import FINETUNE_PRESETS, PROBE_PRESETS, TRAIN_PRESETS

NOTEBOOKS = notebook_paths()
PARAMS = sorted((notebook_dir() / "params").glob("*.yaml"))
SMOKE = load_params(notebook_dir() / "params" / "smoke.yaml")
# a notebook that reads another's output (the smoke checkpoint) runs after it
DEPENDS = {"20_linear_probe": "10_pretrain", "30_finetune": "10_pretrain"}
# which config class a notebook's `overrides` parameter is checked against
OVERRIDE_TARGET = {"10_pretrain": (TRAIN_PRESETS, PretrainConfig), "20_linear_probe": (PROBE_PRESETS, ProbeConfig),
                   "30_finetune": (FINETUNE_PRESETS, FinetuneConfig),
                   "40_ablation_masking": (TRAIN_PRESETS, PretrainConfig),
                   "41_ablation_batch_size": (TRAIN_PRESETS, PretrainConfig),
                   "50_effective_rank": (TRAIN_PRESETS, PretrainConfig)}
FORBIDDEN = {r"^\s*(async\s+)?def\s": "defines a function", r"^\s*class\s": "defines a class",
             r"\blambda\b": "defines a function", r"sys\.path": "edits sys.path", r"%cd\b": "changes directory",
             r"!\s*python": "shells out to python", r"CUDA_VISIBLE_DEVICES": "picks GPUs"}
ABSOLUTE_PATH = re.compile(r"""["'](/|[A-Za-z]:\\|~/)""")


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


# ---------------------------------------------------------------------------------------- committed notebooks

def test_the_house_notebooks_exist() -> None:
    expected = {"00_quickstart", "10_pretrain", "20_linear_probe", "30_finetune", "40_ablation_masking",
                "41_ablation_batch_size", "50_effective_rank", "90_paper_figures"}
    assert expected <= set(_ids(NOTEBOOKS))


def house_rule_violations(nb: nbformat.NotebookNode) -> list[str]:
    """docs/style.md 12 / docs/notebooks.md: what a committed notebook does wrong (empty = nothing)."""
    bad = []
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        bad.append("kernelspec is not python3")
    code = _code_cells(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(code) < 2 or len(tagged) != 1 or tagged[0] is not code[1]:
        return bad + ["the 2nd code cell, and only it, must be tagged `parameters`"]
    if not all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in ast.parse(code[0].source).body):
        bad.append("cell 1 is not imports only")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None:
            bad.append(f"cell {i} is not stripped")
        code_only = "\n".join(line.split("#")[0] for line in cell.source.splitlines())  # comments may say anything
        bad += [f"cell {i} {why}" for pattern, why in FORBIDDEN.items() if re.search(pattern, code_only, re.M)]
        if ABSOLUTE_PATH.search(code_only):
            bad.append(f"cell {i} holds an absolute path")
        if cell is not code[0] and cell is not code[1]:
            if len(cell.source.splitlines()) > 12:
                bad.append(f"cell {i} has more than 12 lines")
            if nb.cells[i - 1].cell_type != "markdown":
                bad.append(f"code cell {i} does not follow a markdown cell")
    return bad


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_follows_house_rules(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert house_rule_violations(nb) == []


def test_the_house_rule_check_finds_violations() -> None:
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("def f():\n    return open('/data/x.wav')  # helper"))
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nb.metadata.kernelspec.name = "conda-env-audiomosaic-py"
    found = house_rule_violations(nb)
    last = len(nb.cells) - 1
    assert set(found) == {"kernelspec is not python3", "cell 1 is not stripped", f"cell {last} defines a function",
                          f"cell {last} holds an absolute path", f"code cell {last} does not follow a markdown cell"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_every_parameter_is_annotated_and_documented(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    lines = [ln for ln in _code_cells(nb)[1].source.splitlines() if ln.strip()]
    params = notebook_parameters(path)
    assert len(params) == len(lines), "papermill could not parse every line (no '=' in help comments)"
    for name, info in params.items():
        assert info["inferred_type_name"] != "None", f"{name} has no type annotation"
        assert info["help"], f"{name} has no help comment"


def test_committed_notebooks_are_stripped() -> None:
    cmd = [sys.executable, "-m", "nbstripout", "--verify", "--extra-keys",
           "metadata.papermill cell.metadata.papermill", *map(str, NOTEBOOKS)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


# ---------------------------------------------------------------------------------------------- parameter files

@pytest.mark.parametrize("path", PARAMS, ids=_ids(PARAMS))
def test_parameter_file_keys_are_notebook_parameters(path: Path) -> None:
    params = load_params(path)
    check_params(params, NOTEBOOKS)
    for nb in NOTEBOOKS:
        assert set(params_for(nb, params)) <= set(notebook_parameters(nb))


@pytest.mark.parametrize("path", PARAMS, ids=_ids(PARAMS))
def test_parameter_file_overrides_are_valid_config_keys(path: Path) -> None:
    """Every ``overrides`` dict of a section resolves against its notebook's preset (the one the notebook will use;
    check_params has made sure it exists) and config class, and ends up in the config."""
    params = load_params(path)
    check_params(params, NOTEBOOKS)
    checked = []
    for nb in NOTEBOOKS:
        got = params_for(nb, params)
        if "overrides" not in got or nb.stem not in OVERRIDE_TARGET:
            continue
        presets, cls = OVERRIDE_TARGET[nb.stem]
        defaults = notebook_parameters(nb)
        smoke = got.get("smoke", defaults["smoke"]["default"] == "True")
        preset = "smoke" if smoke else got.get("preset", ast.literal_eval(defaults["preset"]["default"]))
        cfg = resolve(preset, got["overrides"], presets=presets, cls=cls)
        assert apply_overrides(cfg, got["overrides"]) == cfg, f"{nb.stem}: the overrides are not what resolve gave"
        checked.append(nb.stem)
    assert checked, f"{path.name}: no notebook section with overrides was checked"


@pytest.mark.parametrize("where", ["common", "10_pretrain", "20_linear_probe", "40_ablation_masking"])
def test_an_unknown_preset_in_a_parameter_file_fails(where: str) -> None:
    good = load_params(notebook_dir() / "params" / "cpu.yaml")
    check_params(good, NOTEBOOKS)
    bad = {**good, where: {**good.get(where, {}), "preset": "cpuu"}}
    with pytest.raises(ValueError, match=r"unknown preset 'cpuu'.*allowed.*cpu"):
        check_params(bad, NOTEBOOKS)
    # a preset of another table: paper_layers is a probe preset only, repro_cpu has no probe preset
    with pytest.raises(ValueError, match="10_pretrain: unknown preset 'paper_layers'"):
        check_params({"10_pretrain": {"preset": "paper_layers"}}, NOTEBOOKS)
    with pytest.raises(ValueError, match="40_ablation_masking: unknown preset 'repro_cpu'"):
        check_params({"40_ablation_masking": {"preset": "repro_cpu"}}, NOTEBOOKS)
    check_params({"20_linear_probe": {"preset": "paper_layers"}}, NOTEBOOKS)  # the paper parameters' choice


def test_parameter_checks_reject_unknown_keys() -> None:
    with pytest.raises(ValueError, match="epoch"):
        check_params({"10_pretrain": {"epoch": 3}}, NOTEBOOKS)
    with pytest.raises(ValueError, match="declared by no notebook"):
        check_params({"common": {"not_a_parameter": 1}}, NOTEBOOKS)
    with pytest.raises(ValueError, match="names no notebook"):
        check_params({"11_nothing": {}}, NOTEBOOKS)
    with pytest.raises(ValueError, match="not parameters"):
        params_for(NOTEBOOKS[0], {NOTEBOOKS[0].stem: {"nope": 1}})


def test_common_keys_reach_only_the_notebooks_that_declare_them() -> None:
    fig = next(nb for nb in NOTEBOOKS if nb.stem == "90_paper_figures")
    pre = next(nb for nb in NOTEBOOKS if nb.stem == "10_pretrain")
    params = {"common": {"seed": 3, "out_dir": "x"}}
    assert params_for(fig, params) == {"out_dir": "x"}
    assert params_for(pre, params) == {"seed": 3}


def test_notebook_lookup_and_paths() -> None:
    assert notebook_paths(["10"]) == notebook_paths(["10_pretrain"])
    with pytest.raises(ValueError, match="available"):
        notebook_paths(["99_missing"])
    assert repo_path("runs/x") == repo_path("runs").joinpath("x") and repo_path("runs/x").is_absolute()
    assert given({"a": "", "b": None, "c": 0, "data.root": "runs/d"}, paths=("data.root",)) == {
        "c": 0, "data.root": str(repo_path("runs/d"))}


def test_run_notebooks_cli_rejects_a_bad_parameter_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("10_pretrain: {epochz: 1}\n")
    res = subprocess.run([sys.executable, "-m", "audiomosaic", "run-notebooks", "--params", str(bad),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "epochz" in res.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- executed notebooks

class Executed:
    """Runs each notebook at most once per session with the smoke parameters, into ``root``."""

    def __init__(self, root: Path, data_root: Path):
        self.root, self.data_root, self.done = root, data_root, {}

    def params(self, nb: Path) -> dict:
        """Smoke parameters, with every ``runs/...`` path moved under the session's temporary folder."""
        out = {k: str(self.root / v) if isinstance(v, str) and v.startswith("runs/") else v
               for k, v in params_for(nb, SMOKE).items()}
        if "data_root" in notebook_parameters(nb):
            out["data_root"] = str(self.data_root)
        return out

    def run(self, stem: str) -> tuple[Path, float]:
        if stem not in self.done:
            if stem in DEPENDS:
                self.run(DEPENDS[stem])
            nb = next(p for p in NOTEBOOKS if p.stem == stem)
            out = self.root / "exec" / nb.name
            t0 = time.perf_counter()
            run_notebook(nb, out, self.params(nb), timeout=600)
            self.done[stem] = (out, time.perf_counter() - t0)
            (self.root / "timings.json").write_text(json.dumps({k: round(v[1], 1) for k, v in self.done.items()}))
        return self.done[stem]


@pytest.fixture(scope="session")
def executed(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Executed:
    return Executed(tmp_path_factory.mktemp("notebooks"), tiny_corpus)


@pytest.mark.notebook
@pytest.mark.parametrize("stem", _ids(NOTEBOOKS))
def test_notebook_runs_with_smoke_parameters(stem: str, executed: Executed, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    monkeypatch.delenv("AUDIOMOSAIC_PRESET", raising=False)
    out, seconds = executed.run(stem)
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata.papermill.exception is None
    assert all(c.metadata.papermill.status == "completed" for c in _code_cells(nb))
    print(f"{stem}: {seconds:.1f} s")  # recorded in timings.json, not asserted: wall clock depends on the machine


@pytest.mark.notebook
def test_smoke_runs_write_only_under_their_run_dirs(executed: Executed) -> None:
    """Compute notebooks write under their run_dir, 90 under its out_dir (all moved into the temporary folder)."""
    for stem in _ids(NOTEBOOKS):
        executed.run(stem)
    written = {p.relative_to(executed.root).parts[0] for p in executed.root.rglob("*") if p.is_file()}
    assert written <= {"runs", "exec", "timings.json"}
    assert any((executed.root / "runs" / "smoke" / "10_pretrain").glob("encoder.safetensors"))
    assert (executed.root / "runs" / "smoke" / "paper_figures" / "fig1_masking.pdf").is_file()


@pytest.mark.notebook
def test_executed_notebooks_pass_nbval(executed: Executed, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pytest --nbval-lax`` re-runs the executed copies (with their injected smoke parameters) cell by cell."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    outs = [str(executed.run(stem)[0]) for stem in _ids(NOTEBOOKS)]
    cmd = [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
           "--rootdir", str(executed.root / "exec"), "-o", "addopts=", *outs]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=executed.root / "exec")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


@pytest.mark.notebook
def test_live_plot_redraws_the_curves_while_a_cell_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a real kernel: the display below the cell turns into the loss plot while the 'training' loop writes."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    loop = ("import json, time\nfrom pathlib import Path\nfrom audiomosaic.lab.runner import live_plot\n"
            f"run = Path({str(tmp_path)!r})\n"
            "with live_plot(run, keys=('loss',), every_s=0.2):\n"
            "    for step in range(1, 8):\n"
            "        with open(run / 'metrics.jsonl', 'a') as fh:\n"
            "            fh.write(json.dumps({'step': step, 'loss': 1 / step}) + '\\n')\n"
            "        time.sleep(0.3)\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(loop)])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "live.ipynb")
    out = run_notebook(tmp_path / "live.ipynb", tmp_path / "live_out.ipynb", timeout=120)
    shown = [o for o in out.cells[0].outputs if o.output_type == "display_data"]
    assert len(shown) == 1 and "image/png" in shown[0].data

