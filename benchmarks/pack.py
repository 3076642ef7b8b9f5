"""faces-dev as the benchmarks see it: which family each fake source belongs to, which kind each real source is,
which images share a person, read from ``faces_dev_sources.toml`` beside this module.

Growth is safe by design: a source the data file does not list is warned about (:class:`UnknownSourceWarning`,
naming it, its label and count, and what to add where) and left out of family runs (an unknown real source is kept,
scored as ``DEFAULT_REAL_KIND``). Only a manifest that contradicts itself (a listed fake source with real rows, an
unknown label) stops a run, since no run on it could be trusted.
"""
from __future__ import annotations

import csv
import os
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

__all__ = [
    "ALIGNED_OR_STUDIO", "DEFAULT_REAL_KIND", "FAMILIES", "IN_THE_WILD", "MIN_FAMILY_FAKES", "PAIR_140K",
    "REAL_KINDS", "SOURCES_FILE", "ImageItem", "PackSources", "UnknownRealSourceWarning", "UnknownSourceWarning",
    "UnknownSourcesError", "check_sources", "family_of", "group_of", "is_in_the_wild", "load_manifest",
    "load_sources", "real_kind_of",
]

SOURCES_FILE = Path(__file__).with_name("faces_dev_sources.toml")
# An unknown real source is scored as this kind (it stays out of the in-the-wild target) until it is classified.
DEFAULT_REAL_KIND = "aligned-or-studio"
PAIR_140K = ("stylegan1-140k", "ffhq-140k")


@dataclass(frozen=True)
class PackSources:
    """The data file, typed: families (name -> fake sources), real kinds (kind -> real sources), split groups."""
    families: dict[str, tuple[str, ...]]
    family_why: dict[str, str]
    real_kinds: dict[str, tuple[str, ...]]
    min_family_fakes: int
    one_group: tuple[str, ...]
    per_person_name: tuple[str, ...]
    person_prefix: tuple[str, ...]
    survey: tuple[str, ...]
    ilvr_source: str
    ilvr_shared_person: dict[str, str]


def load_sources(path: str | os.PathLike = SOURCES_FILE) -> PackSources:
    with open(path, "rb") as handle:
        raw = tomllib.load(handle)
    groups = raw.get("groups", {})
    ilvr = groups.get("ilvr", {})
    return PackSources(
        families={name: tuple(f["sources"]) for name, f in raw["families"].items()},
        family_why={name: " ".join(f.get("why", "").split()) for name, f in raw["families"].items()},
        real_kinds={kind: tuple(sources) for kind, sources in raw["real_kinds"].items()},
        min_family_fakes=int(raw.get("min_family_fakes", 30)),
        one_group=tuple(groups.get("one_group", ())), per_person_name=tuple(groups.get("per_person_name", ())),
        person_prefix=tuple(groups.get("person_prefix", ())), survey=tuple(groups.get("survey", ())),
        ilvr_source=ilvr.get("source", ""), ilvr_shared_person=dict(ilvr.get("shared_person", {})))


SOURCES = load_sources()
FAMILIES = SOURCES.families
REAL_KINDS = SOURCES.real_kinds
IN_THE_WILD = REAL_KINDS.get("in-the-wild", ())
ALIGNED_OR_STUDIO = REAL_KINDS.get("aligned-or-studio", ())
MIN_FAMILY_FAKES = SOURCES.min_family_fakes


@dataclass(frozen=True)
class ImageItem:
    file: str
    label: int          # 0 real, 1 fake
    source: str
    group: str          # split unit: images of one group never sit on both sides
    family: str | None  # fakes only
    fmt: str


def family_of(source: str) -> str | None:
    return next((name for name, sources in FAMILIES.items() if source in sources), None)


def real_kind_of(source: str) -> str | None:
    """in-the-wild or aligned-or-studio; None for a source the benchmark does not know (scored as DEFAULT_REAL_KIND)."""
    return next((kind for kind, sources in REAL_KINDS.items() if source in sources), None)


def is_in_the_wild(source: str) -> bool:
    return (real_kind_of(source) or DEFAULT_REAL_KIND) == "in-the-wild"


def group_of(source: str, file: str, sources: PackSources = SOURCES) -> str:
    """The split group of one image: a person must not be on both sides of a split."""
    stem = Path(file).stem
    if source in sources.one_group:
        return f"source:{source}"
    if source in sources.survey:  # survey fakes were made from the laion photo of the same prompt
        return f"survey:{stem}"
    if source in sources.per_person_name:  # Ariel_Sharon_0001 -> Ariel_Sharon; unreadable: the whole source
        person, _, number = stem.rpartition("_")
        return f"person:{source}:{person}" if person and number.isdigit() else f"source:{source}"
    if source in sources.person_prefix:  # p3_result_7 -> p3; identity2_11 -> identity2
        person, sep, _ = stem.partition("_")
        return f"person:{source}:{person}" if sep and person else f"source:{source}"
    if source == sources.ilvr_source:  # face_N16__00002_0 -> reference 00002
        reference = stem.rpartition("__")[2].partition("_")[0]
        if not reference.isdigit():
            return f"source:{source}"
        return sources.ilvr_shared_person.get(reference, f"ilvr-reference:{reference}")
    return f"file:{file}"


class UnknownSourcesError(ValueError):
    """The manifest contradicts itself: a source listed under one label has rows of the other, or a bad label."""


class UnknownSourceWarning(UserWarning):
    """The manifest has a fake source with no generator family: it is left out of every run until it is mapped."""


class UnknownRealSourceWarning(UserWarning):
    """The manifest has a real source the benchmark does not classify; it is scored as DEFAULT_REAL_KIND."""


def _counted(sources: Mapping[tuple[str, str], int]) -> str:
    return ", ".join(f"{s} ({label}, {n} image{'s' if n != 1 else ''})" for (s, label), n in sorted(sources.items()))


_WHERE = f"benchmarks/{SOURCES_FILE.name}"


def check_sources(counts: Mapping[tuple[str, str], int],
                  manifest: str | os.PathLike = "manifest.csv") -> list[tuple[type[UserWarning], str]]:
    """Check the pack's sources against the data file before any work (``counts``: (source, label) -> images).

    Returns the warnings to give (class, text): unknown fake sources are left out, unknown real sources are scored
    as ``DEFAULT_REAL_KIND``. Raises :class:`UnknownSourcesError` only for labels that contradict the listing.
    """
    unknown_fake = {k: n for k, n in counts.items() if k[1] == "fake" and family_of(k[0]) is None
                    and real_kind_of(k[0]) is None}
    unknown_real = {k: n for k, n in counts.items() if k[1] == "real" and real_kind_of(k[0]) is None
                    and family_of(k[0]) is None}
    contradicting = {k: n for k, n in counts.items()
                     if (k[1] == "fake" and real_kind_of(k[0]) is not None) or (k[1] == "real" and family_of(k[0]))}
    if contradicting:
        raise UnknownSourcesError(
            f"{manifest}: sources whose manifest label contradicts their listing: {_counted(contradicting)}. Fake "
            f"sources belong under [families] in {_WHERE}, real ones under [real_kinds]; a source with both labels "
            "must be split into two sources in the pack. Nothing was run.")
    found = []
    if unknown_fake:
        found.append((UnknownSourceWarning,
            f"{manifest}: fake sources without a generator family, left out of this run: {_counted(unknown_fake)}. "
            f"Add each to a family's sources in {_WHERE} ({', '.join(FAMILIES)}; each family's 'why' says what "
            f"belongs there, and a new family needs at least {MIN_FAMILY_FAKES} fakes). If its images share "
            "people, add it under [groups] there. Then list it in docs/real_faces.md."))
    if unknown_real:
        found.append((UnknownRealSourceWarning,
            f"{manifest}: real sources the benchmark does not classify: {_counted(unknown_real)}. They are scored "
            f"as {DEFAULT_REAL_KIND} reals (left out of the in-the-wild false-positive target), each image its own "
            f"split group. Add each to in-the-wild or aligned-or-studio under [real_kinds] in {_WHERE}, under "
            "[groups] if people recur in it, and list it in docs/real_faces.md."))
    return found


def load_manifest(data_dir: str | os.PathLike, *, limit: int | None = None) -> list[ImageItem]:
    """The pack's mapped images (the first ``limit`` per source), after :func:`check_sources` on the whole manifest.

    Reads only manifest.csv, so a contradicting manifest stops a run before any image is decoded.
    """
    path = Path(data_dir) / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: point --data-dir at the faces-dev folder")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        if row["label"] not in ("real", "fake"):
            raise UnknownSourcesError(f"{path}: label must be real or fake, got {row['label']!r} for {row['file']}")
        counts[(row["source"], row["label"])] = counts.get((row["source"], row["label"]), 0) + 1
    for category, message in check_sources(counts, path):
        warnings.warn(message, category, stacklevel=2)
    items, per_source = [], {}
    for row in rows:
        label = int(row["label"] == "fake")
        family = family_of(row["source"]) if label else None
        if label and family is None:
            continue  # unknown fake source: warned about above, left out of every family run
        n = per_source.get(row["source"], 0)
        if limit is not None and n >= limit:
            continue
        per_source[row["source"]] = n + 1
        items.append(ImageItem(row["file"], label, row["source"], group_of(row["source"], row["file"]), family,
                               row["format"]))
    return items
