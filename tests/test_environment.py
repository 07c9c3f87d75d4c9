"""The set-up story is consistent: environment.yml, pyproject.toml, README and .ci/run agree."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TRIO = ("torch", "torchvision", "torchaudio")


def _pins(reqs):
    out = {}
    for r in reqs:
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^;\s]+)", r.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_structure():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "audiomosaic"
    assert "conda-forge" in env["channels"]
    assert "pytorch" not in env["channels"] and "defaults" not in env["channels"]
    deps = env["dependencies"]
    python = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"]
    assert ">=3.11" in _pyproject()["project"]["requires-python"]
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert not any(p.strip().startswith("-e") for p in pip_section)  # relative paths break under micromamba
    env_pins = _pins(pip_section)
    py_pins = _pins(_pyproject()["project"]["dependencies"])
    for pkg in TRIO:
        assert env_pins[pkg] == py_pins[pkg], pkg
    assert (py_pins["torch"], py_pins["torchvision"], py_pins["torchaudio"]) == ("2.9.1", "0.24.1", "2.9.1")
    extras = _pins(sum(_pyproject()["project"]["optional-dependencies"].values(), []))
    for pkg, ver in env_pins.items():  # every pin in the yml agrees with pyproject
        assert py_pins.get(pkg, extras.get(pkg)) == ver, pkg


def _readme_block(title):
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {title}", 1)[1]
    return re.search(r"```bash\n(.*?)\n```", section, re.S).group(1).strip()


def test_ci_runs_exactly_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    setup, test = _readme_block("Set up"), _readme_block("Test")
    lines = [l.strip() for l in ci.splitlines()]
    assert setup in lines and test in lines
    assert lines.index(setup) < lines.index(test)
    assert "python3 -m venv" in ci and "rm -rf" in ci  # fresh, temporary virtual environment


def test_makefile_targets():
    text = (ROOT / "Makefile").read_text()
    for target in ("lab", "smoke", "figures", "test"):
        assert re.search(rf"^{target}:", text, re.M), target
