"""Prompts for photorealistic face portraits over an attribute grid.

Generated faces carry the attributes they were asked for, so a detector can be
evaluated per category (age band, gender, race, expression, glasses) exactly
like the real faces' attribute table. :func:`plan_balanced_attributes` spreads
a set of any size evenly over the grid: every attribute value is used as often
as any other (counts differ by at most one), and combinations are spread too.

The attribute *keys* for the dataset's columns come from
``constants.ATTRIBUTE_COLUMNS``; ``lighting`` and ``background`` only vary the
pictures and are not dataset columns.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence

from fakeface.utils.constants import ATTRIBUTE_COLUMNS

__all__ = [
    "ATTRIBUTE_GRID", "ATTRIBUTE_PHRASES", "build_face_prompt", "build_lookalike_prompt",
    "plan_balanced_attributes", "validate_attributes",
]

# value -> the words the prompt uses for it. Values are the labels stored in the
# manifest and the dataset, so they stay short, lower-case and stable; the
# phrases may be reworded freely (image ids do not depend on them).
ATTRIBUTE_PHRASES: dict[str, dict[str, str]] = {
    "age": {
        "18-29": "aged between 18 and 29",
        "30-44": "aged between 30 and 44",
        "45-64": "aged between 45 and 64",
        "65+": "aged 65 or older",
    },
    "gender": {
        "female": "woman",
        "male": "man",
    },
    # FairFace's seven groups, the categories face-attribute tables commonly use.
    "race": {
        "white": "White",
        "black": "Black",
        "east_asian": "East Asian",
        "southeast_asian": "Southeast Asian",
        "indian": "South Asian (Indian)",
        "middle_eastern": "Middle Eastern",
        "latino_hispanic": "Latino or Hispanic",
    },
    "expression": {
        "neutral": "a neutral, relaxed expression",
        "smiling": "a natural smile",
        "laughing": "an open-mouthed laugh",
        "serious": "a serious, focused expression",
    },
    "glasses": {
        "none": "without glasses",
        "eyeglasses": "wearing clear prescription eyeglasses",
        "sunglasses": "wearing sunglasses",
    },
    "lighting": {
        "daylight": "soft window daylight",
        "studio": "even studio lighting",
        "golden_hour": "warm golden-hour sunlight",
        "indoor": "mixed indoor room lighting",
    },
    "background": {
        "plain": "a plain neutral backdrop",
        "outdoor": "a softly blurred park outdoors",
        "indoor": "a softly blurred home interior",
        "urban": "a softly blurred city street",
    },
}

# Order matters: the planner balances attributes in this order, demographics
# first (the categories evaluation reports on), then the picture-only ones.
_PLANNING_ORDER = ("age", "gender", "race", "expression", "glasses", "lighting", "background")
assert set(ATTRIBUTE_COLUMNS) <= set(_PLANNING_ORDER) == set(ATTRIBUTE_PHRASES)
ATTRIBUTE_GRID: dict[str, tuple[str, ...]] = {key: tuple(ATTRIBUTE_PHRASES[key]) for key in _PLANNING_ORDER}


def validate_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """Return ``attributes`` as a plain dict, or raise ``ValueError`` naming the bad key or value.

    Any subset of the grid's keys is allowed; missing ones are left to the model.
    """
    clean: dict[str, str] = {}
    for key, value in attributes.items():
        if key not in ATTRIBUTE_GRID:
            raise ValueError(f"unknown face attribute {key!r}; choose among {', '.join(ATTRIBUTE_GRID)}")
        if value not in ATTRIBUTE_GRID[key]:
            raise ValueError(f"unknown {key} {value!r}; choose one of {', '.join(ATTRIBUTE_GRID[key])}")
        clean[key] = value
    return clean


def build_face_prompt(attributes: Mapping[str, str]) -> str:
    """A photorealistic single-portrait prompt describing ``attributes`` (any subset of the grid)."""
    attrs = validate_attributes(attributes)
    phrase = {key: ATTRIBUTE_PHRASES[key][value] for key, value in attrs.items()}

    subject = phrase.get("gender", "person")
    if "race" in phrase:
        subject = f"{phrase['race']} {subject}"
    subject = f"an {subject}" if subject[0].lower() in "aeiou" else f"a {subject}"
    if "age" in phrase:
        subject += f" {phrase['age']}"
    details = []
    if "expression" in phrase:
        details.append(f"with {phrase['expression']}")
    if "glasses" in phrase:
        details.append(phrase["glasses"])
    if "lighting" in phrase:
        details.append(f"lit by {phrase['lighting']}")
    if "background" in phrase:
        details.append(f"in front of {phrase['background']}")
    described = ", ".join([subject, *details])
    # The fixed tail asks for what a real camera portrait looks like, so the
    # detector cannot learn "illustration vs photo" instead of "generated vs real".
    return (
        f"A photorealistic close-up portrait photograph of {described}. "
        "One person only, head and shoulders, face fully visible and looking at the camera. "
        "Natural skin texture and pores, sharp focus on the eyes, shot on a full-frame camera "
        "with an 85mm lens. No text, no watermark, no border, not an illustration."
    )


def build_lookalike_prompt() -> str:
    """The edit prompt that turns a real face photo into a new, similar-looking person."""
    return (
        "Create a new photorealistic portrait photograph of a different person who closely "
        "resembles the person in this photo: similar age, face shape, skin tone, hair and "
        "expression, the same framing, pose, lighting and background. Keep it looking like an "
        "ordinary camera photo with natural skin texture. No text, no watermark."
    )


def plan_balanced_attributes(
    count: int,
    *,
    seed: int = 0,
    grid: Mapping[str, Sequence[str]] | None = None,
) -> list[dict[str, str]]:
    """``count`` attribute dicts spread evenly over ``grid`` (default :data:`ATTRIBUTE_GRID`).

    Greedy and sequential: for each image and each attribute in grid order, the
    candidates are the values used least so far; among those, the ones that
    least often appeared together with the values already chosen for this
    image (summed over those attributes); remaining ties are broken by a
    ``seed``-ed RNG. Hence every attribute's counts differ by at most one, pairs
    of attributes are spread as evenly as the count allows, the result is
    deterministic for a seed, and the plan for N images is a prefix of the plan
    for N + M (so a larger re-run extends a smaller one instead of replacing it).
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    grid = {key: tuple(values) for key, values in (grid or ATTRIBUTE_GRID).items()}
    for key, values in grid.items():
        if not values:
            raise ValueError(f"attribute {key!r} has no values")
    rng = random.Random(seed)
    marginal = {key: Counter() for key in grid}
    pairs: Counter[tuple[str, str, str, str]] = Counter()
    plan: list[dict[str, str]] = []
    for _ in range(count):
        chosen: dict[str, str] = {}
        for key, values in grid.items():
            least = min(marginal[key][v] for v in values)
            candidates = [v for v in values if marginal[key][v] == least]
            overlap = {v: sum(pairs[(k, cv, key, v)] for k, cv in chosen.items()) for v in candidates}
            rarest = min(overlap.values())
            candidates = [v for v in candidates if overlap[v] == rarest]
            chosen[key] = candidates[rng.randrange(len(candidates))]
        items = list(chosen.items())
        for i, (key, value) in enumerate(items):
            marginal[key][value] += 1
            for other_key, other_value in items[:i]:
                pairs[(other_key, other_value, key, value)] += 1
        plan.append(chosen)
    return plan
