"""Tasks built from recorded audio in Debian data packages (docs/data.md §1.3): drums7 and speaker15.

The packages are fetched without root or installation: ``apt-get download`` into the cache, then
``dpkg-deb --fsys-tarfile | tar x`` of the audio files only. When apt is missing or the download fails the task
raises :class:`SourceUnavailable` with a one-line reason and the corpus builder skips it.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from audiomosaic.data.recipes import Clip, FileSpec, TaskPlan, assign_splits, split_groups, task_rng

DRUM_CLASSES = ("kick", "snare", "hihat", "tom", "cymbal", "clap", "hand_perc")

# Instrument-name keywords -> class, tried in this order (hand percussion first: "Djembe Bass" is not a kick).
_DRUM_KEYWORDS = (
    ("hand_perc", r"conga|bongo|djembe|cajon|tambourine|maraca|cowbell|clave|woodblock|agogo|sangban|dununba|"
                  r"kenkeni|shaker|waterglass|triangle|guiro|timbale"),
    ("clap", r"clap|snap"),
    ("hihat", r"hi-?hat|\b[oc]?hh\b|\bhat\b"),
    ("cymbal", r"crash|ride|splash|china|cymbal|\bbell\b"),
    ("tom", r"tom"),
    ("snare", r"snare|rim|stick"),
    ("kick", r"kick|bass ?drum|\bbd\b"),
)

# Kits sharing samples or an author form one group (docs/data.md §4); other kits are their own group.
KIT_LINEAGE = {
    "Millo-Drums_v.1": "millo", "Millo_MultiLayered2": "millo", "Millo_MultiLayered3": "millo",
    "ElectricEmpireKit": "artemiolabs", "HardElectro1": "artemiolabs",
    "Gimme A Hand 1.0": "glenmacarthur", "The Black Pearl 1.0": "glenmacarthur",
}
# docs/data.md §3(b)3: the held-out kit groups (every class on both sides; 463 train / 189 test hits).
DRUM_TEST_GROUPS = ("millo", "artemiolabs", "circafrique_v4")


class SourceUnavailable(RuntimeError):
    """A data source cannot be obtained here; the message is one line saying why."""


def fetch_package(package: str, patterns: tuple[str, ...], cache: Path) -> Path:
    """Download a Debian package and extract the files matching ``patterns``; cached across builds.

    Returns:
        The extraction root (the package's file system tree, e.g. ``<root>/usr/share/...``).

    Raises:
        SourceUnavailable: no apt-get/dpkg-deb, or the download or extraction failed.
    """
    root = Path(cache) / "apt" / package
    stamp = root / ".extracted"
    if stamp.is_file():
        return root
    missing = [tool for tool in ("apt-get", "dpkg-deb", "tar") if shutil.which(tool) is None]
    if missing:
        raise SourceUnavailable(f"{', '.join(missing)} not found (not a Debian/Ubuntu system?)")
    debs = Path(cache) / "apt" / "_debs"
    debs.mkdir(parents=True, exist_ok=True)
    try:
        res = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True,
                             timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SourceUnavailable(f"apt-get download {package} failed: {e}") from None
    found = sorted(debs.glob(f"{package}_*.deb"))
    if res.returncode != 0 or not found:
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith("E:")] or res.stderr.splitlines() or ["?"]
        raise SourceUnavailable(f"apt-get download {package} failed: {lines[-1].strip()}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    deb = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(found[-1])], stdout=subprocess.PIPE)
    tar = subprocess.run(["tar", "x", "-C", str(root), "--wildcards", *patterns], stdin=deb.stdout,
                         capture_output=True, text=True)
    deb.stdout.close()
    if deb.wait() != 0 or tar.returncode != 0:
        raise SourceUnavailable(f"extracting {found[-1].name} failed: {tar.stderr.strip()[-200:]}")
    for f in found:
        f.unlink()  # the extracted subset is what is kept
    stamp.touch()
    return root


def drum_class(instrument: str) -> str | None:
    """Hydrogen instrument name -> one of DRUM_CLASSES, or None (FX, zaps, unnamed slots)."""
    name = instrument.lower()
    for cls, pattern in _DRUM_KEYWORDS:
        if re.search(pattern, name):
            return cls
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def read_drumkit(xml_path: Path) -> list[tuple[str, Path]]:
    """(instrument name, sample file) for every layer of every instrument in a Hydrogen ``drumkit.xml``."""
    tree = ET.parse(xml_path)
    for el in tree.iter():  # drop the XML namespace so tags read plainly
        el.tag = el.tag.rsplit("}", 1)[-1]
    out = []
    for inst in tree.iter("instrument"):
        name = (inst.findtext("name") or "").strip()
        for fn in inst.iter("filename"):
            if fn.text and (xml_path.parent / fn.text.strip()).is_file():
                out.append((name, xml_path.parent / fn.text.strip()))
    return out


@dataclass(frozen=True)
class DrumsTask:
    """7 drum classes from the 14 Hydrogen kits; kit lineage groups are held out (fixed test groups)."""

    name: str = "drums7"
    seconds: float = 1.0
    test_frac: float = 0.3  # only used if the fixed test groups do not cover every class

    def plan(self, seed: int, cache: Path) -> TaskPlan:
        root = fetch_package("hydrogen-drumkits", ("*drumkit.xml", "*.wav", "*.flac", "*.aiff"), cache)
        clips, seen = [], set()
        for xml_path in sorted(root.rglob("drumkit.xml")):
            kit = xml_path.parent.name
            group = KIT_LINEAGE.get(kit, _slug(kit))
            for instrument, sample in read_drumkit(xml_path):
                cls = drum_class(instrument)
                if cls is None or sample in seen:  # kits reuse a file across instruments: keep it once
                    continue
                seen.add(sample)
                name = f"{_slug(kit)}__{_slug(sample.stem)}"
                name += f"_{len(seen)}" if any(c.name == name and c.label == cls for c in clips) else ""
                clips.append(Clip(self.name, cls, group, name, FileSpec(str(sample), self.seconds)))
        if not clips:
            raise SourceUnavailable(f"no drum kit samples found under {root}")
        split = {c.group: ("test" if c.group in DRUM_TEST_GROUPS else "train") for c in clips}
        if not _covers(clips, split):  # another package version: fall back to a seeded group split
            split = split_groups([c.label for c in clips], [c.group for c in clips], self.test_frac,
                                 task_rng(seed, self.name))
        return TaskPlan(self.name, DRUM_CLASSES, assign_splits(clips, split))


def _covers(clips: list[Clip], split: dict[str, str]) -> bool:
    sides = {"train": set(), "test": set()}
    for c in clips:
        sides[split[c.group]].add(c.label)
    labels = {c.label for c in clips}
    return sides["train"] == labels and sides["test"] == labels


def phrase_stem(file_stem: str) -> str:
    """Takes of one line share a stem (docs/data.md §4): ``Ow1..Ow4`` -> ``ow``, ``Firepunch6`` -> ``firepunch``."""
    return re.sub(r"[^a-z]", "", re.sub(r"[\d_\-]*\d+[a-z]?$", "", file_stem.lower())) or file_stem.lower()


@dataclass(frozen=True)
class SpeakerTask:
    """Speaker identity over the 15 Hedgewars voice packs; phrase stems are held out."""

    name: str = "speaker15"
    seconds: float = 2.0
    test_frac: float = 0.25

    def plan(self, seed: int, cache: Path) -> TaskPlan:
        root = fetch_package("hedgewars-data", ("*/Sounds/voices/*",), cache)
        files = sorted(p for p in root.rglob("*") if p.parent.parent.name == "voices" and p.suffix == ".ogg")
        if not files:
            raise SourceUnavailable(f"no Hedgewars voice clips found under {root}")
        clips = [Clip(self.name, f.parent.name, phrase_stem(f.stem), _slug(f.stem),
                      FileSpec(str(f), self.seconds)) for f in files]
        split = split_groups([c.label for c in clips], [c.group for c in clips], self.test_frac,
                             task_rng(seed, self.name))
        return TaskPlan(self.name, tuple(sorted({c.label for c in clips})), assign_splits(clips, split))
