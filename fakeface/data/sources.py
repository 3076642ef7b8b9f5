"""Where the face dataset's images come from: folders of reals (+ attribute table), generator output
folders (+ ``manifest.jsonl``), and the built-in synthetic source.

Collecting only lists candidates and problems; nothing is decoded here. Every
file found in a source folder either becomes a candidate or is reported as
skipped with its reason, so nothing vanishes silently.
"""
from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fakeface.utils.constants import ATTRIBUTE_COLUMNS, FAKE, LABEL_NAMES, REAL

__all__ = [
    "AttributeTable", "Candidate", "DEFAULT_REAL_SOURCE", "FolderListing", "MANIFEST_NAME", "Skipped",
    "collect_fake_folder", "collect_real_folder", "load_attribute_table",
]

MANIFEST_NAME = "manifest.jsonl"
DEFAULT_REAL_SOURCE = "ffhq"

# Attribute-table columns accepted for each dataset field (compared lower-case,
# without spaces, dashes or underscores). The FFHQ tables the original project
# used have `Name, FacialExp, Glasses, Gender, Race`.
_KEY_COLUMNS = ("name", "file", "filename", "image", "imagename", "id", "path")
_ATTRIBUTE_ALIASES = {
    "gender": "gender", "sex": "gender",
    "race": "race", "ethnicity": "race",
    "glasses": "glasses", "eyeglasses": "glasses",
    "facialexp": "expression", "expression": "expression", "facialexpression": "expression", "emotion": "expression",
    "age": "age", "agegroup": "age",
}
assert set(_ATTRIBUTE_ALIASES.values()) == set(ATTRIBUTE_COLUMNS)
_IMAGE_SUFFIX = re.compile(r"\.(png|jpe?g|webp|gif|bmp|tiff?|avif|heic|heif)$", re.IGNORECASE)


@dataclass(frozen=True)
class Skipped:
    """A file (or manifest line) that did not make it into the dataset, and why."""

    file: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "reason": self.reason}


@dataclass
class Candidate:
    """One image that may go into the dataset; ``name`` is its public, path-free name."""

    name: str                                   # e.g. "real/ffhq/00012.png"; also the Image feature's path
    path: Path                                  # where its bytes are on disk
    label: int
    generator: str
    source_id: str
    attributes: dict[str, str | None] = field(default_factory=dict)
    declared_size: tuple[int, int] | None = None  # (width, height) a manifest claims; checked on decode

    @property
    def label_name(self) -> str:
        return LABEL_NAMES[self.label]


@dataclass
class FolderListing:
    """What one source folder yielded."""

    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers

def _normalise_header(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", text.strip().lower())


def _clean_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value).strip()
    return text or None


def _walk_files(folder: Path) -> tuple[list[PurePosixPath], list[PurePosixPath]]:
    """(regular files, hidden files) under ``folder`` as sorted relative POSIX paths; symlinked folders not followed."""
    files, hidden = [], []
    for root, dirs, names in os.walk(folder, followlinks=False):
        rel_root = Path(root).relative_to(folder)
        hidden_dirs = [d for d in dirs if d.startswith(".")]
        for d in hidden_dirs:
            hidden.append(PurePosixPath(rel_root.as_posix(), d))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            rel = PurePosixPath(rel_root.as_posix(), name)
            (hidden if name.startswith(".") else files).append(rel)
    return sorted(files), sorted(hidden)


def _require_folder(folder: str | os.PathLike, role: str) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ValueError(f"{role} folder {path} does not exist or is not a folder")
    return path


def safe_generator_name(text: str) -> str:
    """A generator name fit for a column value and a file name: ``DALL·E 2`` -> ``dall-e-2``."""
    name = re.sub(r"[^a-z0-9.+]+", "-", text.strip().lower()).strip("-")
    if not name:
        raise ValueError(f"generator name {text!r} has no usable characters")
    return name


# --------------------------------------------------------------------------- attribute table

# Table spellings -> the generator's vocabulary (fakeface.generation.prompts.ATTRIBUTE_GRID),
# so real and generated faces line up in per-category evaluation.
_VALUE_ALIASES = {
    "glasses": {"noglasses": "none", "no": "none", "false": "none", "0": "none", "without": "none",
                "readingglasses": "eyeglasses", "glasses": "eyeglasses", "yes": "eyeglasses", "true": "eyeglasses",
                "1": "eyeglasses", "prescription": "eyeglasses", "sunglass": "sunglasses"},
    "gender": {"m": "male", "man": "male", "f": "female", "woman": "female"},
    "expression": {"smile": "smiling", "happy": "smiling", "laugh": "laughing", "neutralface": "neutral"},
    "race": {"eastasian": "east_asian", "southeastasian": "southeast_asian",
             "middleeastern": "middle_eastern", "latinohispanic": "latino_hispanic", "latino": "latino_hispanic",
             "hispanic": "latino_hispanic"},
}


def normalise_attribute_value(field_name: str, value: str | None) -> str | None:
    """``"NoGlasses"`` -> ``"none"``, ``"Male"`` -> ``"male"``, ``"East Asian"`` -> ``"east_asian"``.

    Unknown spellings are kept, lower-cased with ``_`` for spaces, never dropped.
    """
    if value is None:
        return None
    text = re.sub(r"\s+", "_", value.strip().lower())
    return _VALUE_ALIASES.get(field_name, {}).get(text.replace("_", ""), text)


@dataclass
class AttributeTable:
    """Attributes per file stem, read from a CSV such as FFHQ's ``Name, FacialExp, Glasses, Gender, Race``."""

    by_stem: dict[str, dict[str, str | None]]
    columns: dict[str, str]                     # CSV column -> dataset field
    ignored_columns: list[str]
    used: set[str] = field(default_factory=set)

    def lookup(self, stem: str) -> dict[str, str | None] | None:
        row = self.by_stem.get(stem)
        if row is not None:
            self.used.add(stem)
        return row

    def summary(self) -> dict[str, Any]:
        unused = sorted(set(self.by_stem) - self.used)
        return {
            "rows": len(self.by_stem), "columns": self.columns, "ignored_columns": self.ignored_columns,
            "rows_without_image": len(unused), "rows_without_image_examples": unused[:20],
        }


def load_attribute_table(path: str | os.PathLike) -> AttributeTable:
    """Read an attribute CSV keyed by file name (``00012.png`` or ``00012``); raises ValueError if unusable."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"attribute table {path} does not exist") from None
    except UnicodeDecodeError:
        raise ValueError(f"attribute table {path} is not UTF-8 text (expected a CSV file)") from None
    except OSError as error:
        raise ValueError(f"attribute table {path} cannot be read ({error.strerror})") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    headers = reader.fieldnames or []
    normalised = {h: _normalise_header(h) for h in headers if h is not None}
    key_column = next((h for h, n in normalised.items() if n in _KEY_COLUMNS), None)
    if key_column is None:
        raise ValueError(
            f"attribute table {path} has no file-name column (expected one of Name, file, filename, image, id); "
            f"its columns are {headers}"
        )
    columns = {h: _ATTRIBUTE_ALIASES[n] for h, n in normalised.items() if n in _ATTRIBUTE_ALIASES}
    if not columns:
        raise ValueError(
            f"attribute table {path} has no attribute columns (expected some of FacialExp/expression, Glasses, "
            f"Gender, Race, Age); its columns are {headers}"
        )
    ignored = [h for h in headers if h is not None and h != key_column and h not in columns]
    by_stem: dict[str, dict[str, str | None]] = {}
    for line, row in enumerate(reader, start=2):
        key = _clean_value(row.get(key_column))
        if key is None:
            raise ValueError(f"attribute table {path}, line {line}: empty {key_column!r}")
        name = PurePosixPath(key.replace("\\", "/")).name
        stem = name.rsplit(".", 1)[0] if _IMAGE_SUFFIX.search(name) else name
        by_stem[stem] = {
            field_name: normalise_attribute_value(field_name, _clean_value(row.get(column)))
            for column, field_name in columns.items()
        }
    return AttributeTable(by_stem, columns, ignored)


# --------------------------------------------------------------------------- folders

def collect_real_folder(
    folder: str | os.PathLike,
    *,
    tag: str,
    generator: str = DEFAULT_REAL_SOURCE,
    attributes: AttributeTable | None = None,
    exclude: Iterable[Path] = (),
) -> FolderListing:
    """Every file under ``folder`` (recursively, FFHQ layout ``00000.png`` …) as a real candidate.

    ``source_id`` is the file stem, the key look-alike fakes refer to.
    ``exclude`` holds files not to list (e.g. the attribute table itself).
    """
    root = _require_folder(folder, "real")
    excluded = {p.resolve() for p in exclude}
    files, hidden = _walk_files(root)
    listing = FolderListing(summary={"folder": tag, "label": "real", "generator": generator, "hidden_files_ignored": len(hidden)})
    with_attributes = 0
    for rel in files:
        path = root / rel
        if path.resolve() in excluded:
            continue
        row = attributes.lookup(rel.stem) if attributes is not None else None
        with_attributes += row is not None
        listing.candidates.append(Candidate(
            name=f"real/{tag}/{rel}", path=path, label=REAL, generator=generator, source_id=rel.stem,
            attributes=dict(row) if row else {},
        ))
    listing.summary["files"] = len(listing.candidates)
    if attributes is not None:
        listing.summary["files_with_attributes"] = with_attributes
    return listing


def collect_fake_folder(folder: str | os.PathLike, *, tag: str, generator: str | None = None) -> FolderListing:
    """Generated images under ``folder``: described by ``manifest.jsonl`` if there is one, else all files.

    With a manifest, only ``status: "ok"`` entries are images; their ``model``
    is the generator (``generator`` is the fallback), ``source_id`` links a
    look-alike to its real face, and ``attributes`` fill the attribute columns.
    Files the manifest does not list, listed files that are missing, and bad
    lines are reported as skipped.
    """
    root = _require_folder(folder, "fake")
    files, hidden = _walk_files(root)
    manifest = root / MANIFEST_NAME
    listing = FolderListing(summary={"folder": tag, "label": "fake", "hidden_files_ignored": len(hidden)})
    if not manifest.is_file():
        if generator is None:
            raise ValueError(
                f"fake folder {root} has no {MANIFEST_NAME}: say which generator made its images "
                f"(--fake-generator NAME, e.g. dall-e-2)"
            )
        name = safe_generator_name(generator)
        for rel in files:
            listing.candidates.append(Candidate(
                name=f"fake/{tag}/{rel}", path=root / rel, label=FAKE, generator=name, source_id=f"{tag}/{rel}",
            ))
        listing.summary.update(generator=name, manifest=False, files=len(listing.candidates))
        return listing
    _collect_from_manifest(root, tag, generator, files, manifest, listing)
    return listing


def _collect_from_manifest(root: Path, tag: str, fallback: str | None, files: list[PurePosixPath], manifest: Path,
                           listing: FolderListing) -> None:
    statuses: dict[str, int] = {}
    listed: dict[PurePosixPath, int] = {}
    models: dict[str, int] = {}
    lookalikes = 0
    manifest_name = f"fake/{tag}/{MANIFEST_NAME}"

    def skip(reason: str, line: int | None = None, file: str | None = None) -> None:
        where = file or (f"{manifest_name}:{line}" if line is not None else manifest_name)
        listing.skipped.append(Skipped(where, reason))

    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{manifest} cannot be read as UTF-8 JSON lines ({error})") from None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as error:
            skip(f"manifest line is not valid JSON ({error.msg})", number)
            continue
        if not isinstance(entry, dict):
            skip("manifest line is not a JSON object", number)
            continue
        status = str(entry.get("status", "")).strip().lower()
        statuses[status or "missing"] = statuses.get(status or "missing", 0) + 1
        if status != "ok":
            if status not in ("refused", "failed"):
                skip(f"manifest entry has unknown status {entry.get('status')!r} (expected ok, refused or failed)", number)
            continue
        file_value = entry.get("file")
        if not isinstance(file_value, str) or not file_value.strip():
            skip("manifest entry with status ok has no 'file'", number)
            continue
        rel = PurePosixPath(file_value.replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts:
            skip(f"manifest file path {file_value!r} leaves the folder", number)
            continue
        rel = PurePosixPath(*[p for p in rel.parts if p != "."])
        if rel in listed:
            skip(f"listed again (first on line {listed[rel]})", number, f"fake/{tag}/{rel}")
            continue
        listed[rel] = number
        if not (root / rel).is_file():
            skip("listed in the manifest but the file is missing", number, f"fake/{tag}/{rel}")
            continue
        model = entry.get("model") or fallback
        if not model:
            skip("manifest entry has no 'model' and no --fake-generator was given", number, f"fake/{tag}/{rel}")
            continue
        generator = safe_generator_name(str(model))
        models[generator] = models.get(generator, 0) + 1
        source_id = _clean_value(entry.get("source_id"))
        lookalikes += source_id is not None
        attributes = entry.get("attributes") if isinstance(entry.get("attributes"), dict) else {}
        candidate = Candidate(
            name=f"fake/{tag}/{rel}", path=root / rel, label=FAKE, generator=generator,
            source_id=source_id or f"{tag}/{_clean_value(entry.get('id')) or rel}",
            attributes={k: _clean_value(attributes.get(k)) for k in ATTRIBUTE_COLUMNS if k in attributes},
        )
        if isinstance(entry.get("width"), int) and isinstance(entry.get("height"), int):
            candidate.declared_size = (entry["width"], entry["height"])
        listing.candidates.append(candidate)
    for rel in files:
        if rel == PurePosixPath(MANIFEST_NAME) or rel in listed:
            continue
        skip(f"not listed with status ok in {MANIFEST_NAME}", file=f"fake/{tag}/{rel}")
    listing.summary.update(
        manifest=True, manifest_statuses=dict(sorted(statuses.items())), generators=dict(sorted(models.items())),
        lookalikes=lookalikes, files=len(listing.candidates),
    )


def unique_tags(folders: Iterable[str | os.PathLike], taken: set[str]) -> list[str]:
    """Public names for source folders: their base names, made unique (``ffhq``, ``ffhq-2``)."""
    tags = []
    for folder in folders:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(folder).expanduser().resolve().name).strip("-.") or "folder"
        tag, n = base, 2
        while tag in taken:
            tag, n = f"{base}-{n}", n + 1
        taken.add(tag)
        tags.append(tag)
    return tags

