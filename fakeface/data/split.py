"""Perceptual hashing, duplicate detection and the grouped, stratified split of the face dataset.

No ``source_id`` group ever spans two splits, and near-duplicate images (a
re-encode, a slight resize) are merged into one group first, so a copy of a
test image can never sit in train. Everything is deterministic for a seed and
independent of input order.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "DEFAULT_NEAR_DUPLICATE_DISTANCE", "DEFAULT_SPLIT_FRACTIONS", "SPLIT_NAMES",
    "assign_group_splits", "find_near_duplicates", "hamming_distance", "perceptual_hash", "seeded_key",
]

SPLIT_NAMES = ("train", "validation", "test")
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
# Bits (of 64) that may differ for two images to count as near-duplicates. A
# JPEG q90 re-encode or a 5 % resize moves a pHash by 0-4 bits; unrelated
# images sit around 32.
DEFAULT_NEAR_DUPLICATE_DISTANCE = 8

_HASH_SIDE = 32
_DCT_KEEP = 8


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``D @ x`` is the DCT of the column vector ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_DCT = _dct_matrix(_HASH_SIDE)


def perceptual_hash(image: Image.Image) -> int:
    """64-bit pHash: sign of the 8×8 lowest DCT frequencies of a 32×32 grey thumbnail vs their median."""
    grey = np.asarray(image.convert("L").resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.BOX), np.float64)
    coeffs = (_DCT @ grey @ _DCT.T)[:_DCT_KEEP, :_DCT_KEEP].ravel()
    # The DC term only says how bright the image is; leave it out of the median.
    bits = coeffs > np.median(coeffs[1:])
    return int(np.packbits(bits).view(">u8")[0])


def hamming_distance(a: int, b: int) -> int:
    return int((a ^ b).bit_count())


def find_near_duplicates(hashes: Sequence[int], max_distance: int = DEFAULT_NEAR_DUPLICATE_DISTANCE) -> list[tuple[int, int, int]]:
    """All pairs ``(i, j, distance)`` with ``i < j`` whose hashes differ in at most ``max_distance`` bits.

    Exhaustive, in chunks that keep memory near 128 MB: about 10 s for 70 000
    images on one core, with no false negatives (unlike bucketing schemes).
    """
    values = np.asarray([h & 0xFFFFFFFFFFFFFFFF for h in hashes], dtype=np.uint64)
    n = len(values)
    pairs: list[tuple[int, int, int]] = []
    if n < 2:
        return pairs
    rows = max(1, min(n, (1 << 24) // n))
    for start in range(0, n, rows):
        block = values[start:start + rows]
        rest = values[start:]
        distances = np.bitwise_count(block[:, None] ^ rest[None, :])       # (rows, n - start)
        ii, jj = np.nonzero(distances <= max_distance)
        for a, b in zip(ii.tolist(), jj.tolist()):
            i, j = start + a, start + b
            if i < j:
                pairs.append((i, j, int(distances[a, b])))
    return pairs


def seeded_key(seed: int, text: str) -> str:
    """A stable pseudo-random sort key: shuffles deterministically, independent of input order."""
    return hashlib.sha256(f"{seed}\x00{text}".encode()).hexdigest()


def assign_group_splits(
    groups: Mapping[str, Mapping[Hashable, int]],
    fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
    names: Sequence[str] = SPLIT_NAMES,
) -> dict[str, str]:
    """Split name for every group, stratified over the strata counted in each group.

    ``groups`` maps a group key to its rows per stratum (here: (label,
    generator) → count). Groups are placed largest first (ties broken by a
    seeded hash), each into the split furthest below its target for the
    group's strata, measured relative to that target so small splits get
    their share as early as large ones. No group is ever divided.
    """
    if len(fractions) != len(names):
        raise ValueError(f"{len(names)} split fractions expected ({', '.join(names)}), got {len(fractions)}")
    if any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0, atol=1e-6):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {list(fractions)}")
    totals: dict[Hashable, int] = defaultdict(int)
    for strata in groups.values():
        for stratum, count in strata.items():
            totals[stratum] += count
    placed = {name: defaultdict(int) for name in names}
    open_splits = [k for k, f in enumerate(fractions) if f > 0]
    order = sorted(groups, key=lambda g: (-sum(groups[g].values()), seeded_key(seed, g)))
    assignment: dict[str, str] = {}
    for group in order:
        strata = groups[group]

        def shortfall(k: int) -> float:
            # Rows of these strata the split still lacks, as a fraction of its target for them.
            return sum(count * (1 - placed[names[k]][s] / (fractions[k] * totals[s])) for s, count in strata.items())

        best = max(open_splits, key=lambda k: (shortfall(k), fractions[k], -k))
        assignment[group] = names[best]
        for stratum, count in strata.items():
            placed[names[best]][stratum] += count
    return assignment


class UnionFind:
    """Disjoint sets over hashable keys (groups merged by near-duplicate links)."""

    def __init__(self) -> None:
        self.parent: dict[Hashable, Hashable] = {}

    def find(self, key: Hashable) -> Hashable:
        self.parent.setdefault(key, key)
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: Hashable, b: Hashable) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller key becomes the root so the result does not depend on union order.
            if str(rb) < str(ra):
                ra, rb = rb, ra
            self.parent[rb] = ra
