"""Dataset recipes: from a collection (``collection.csv`` of a crawl) to a training manifest.

``ivory``
    Positive when ivory is the sole or main material of the object: the first
    material named in the medium is ivory ("Ivory", "Ivory, gold", "Elephant
    ivory", "Walrus ivory", "Ivory with traces of paint"). Not used at all when
    ivory is only the support of a painting ("Watercolor on ivory": a portrait
    miniature shows paint, not carving) or a secondary material ("Bone, ivory",
    "Wood, ivory inlay"), or when "ivory" names a colour ("ivory-glazed
    porcelain"), nor when the main material is a substitute named after it
    ("Vegetable ivory": a palm nut; "French ivory", "imitation ivory", ivorine,
    celluloid: plastics) or is uncertain ("Bone or ivory"): a photo of them is not
    a photo of ivory, and the ivory class is what a reviewer acts on. Negative when
    the medium is a ceramic (porcelain, earthenware, stoneware, terracotta, faience,
    ...) and mentions no ivory.
``culture``
    Paintings (classification or object name mentions painting) labelled with
    a grouped culture: every culture containing "India" is "Indian" (but "American
    Indian" is "American" and "West Indian" "Caribbean"), "China" /
    "Chinese" is "Chinese", "Japan" is "Japanese", "America" is "American", and
    so on; the ``top`` most frequent groups are kept.
``instance``
    Every photo of one object is one class (label = object id), for objects with
    at least ``min_images`` photos. The photos of each object are split across
    train / val / test (at least one in train); the task is recognising the
    same object again.

Every recipe writes ``manifest.csv`` (paths relative to it, so the folder can
move) that ``artsentry train`` reads unchanged, and a dataset card
(``card.json`` and ``card.html``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd

from ..files import first_names
from .splits import split_instances

log = logging.getLogger(__name__)

RECIPES = ("ivory", "culture", "instance")

CERAMIC_TERMS = ("porcelain", "earthenware", "stoneware", "terracotta", "terra cotta", "faience", "ceramic",
                 "pottery", "creamware", "majolica", "maiolica", "celadon", "bone china", "soft-paste",
                 "hard-paste", "fritware", "slipware", "biscuit")
_COLOUR_IVORY = re.compile(r"ivory[- ](colou?red|white|glaze|glazed|ground|tone|toned)")
_SUPPORT_IVORY = re.compile(r"\bon\s+(\w+\s+)?ivory\b")
#: materials named after ivory that are not ivory: tagua palm nut ("vegetable ivory") and the plastics
#: sold as ivory ("French ivory" is celluloid)
_SUBSTITUTE_IVORY = re.compile(r"\b(vegetable|imitation|faux|artificial|synthetic|simulated|french|fake)\s+ivory\b"
                               r"|\bivor(ine|oid|ite)\b|\bcelluloid\b|\bplastic\b|\bresin\b")


def _materials(medium: str) -> list[str]:
    return [m.strip() for m in re.split(r"[,;]|\band\b|\bwith\b", medium.lower()) if m.strip()]


def ivory_label(medium: str | None) -> str | None:
    """``'ivory'``, ``'non_ivory'`` or None (not used) for a medium string."""
    if not medium:
        return None
    text = medium.lower()
    mentions_ivory = "ivory" in text and not _COLOUR_IVORY.search(text)
    if mentions_ivory:
        if _SUPPORT_IVORY.search(text):
            return None
        mats = _materials(text)
        if not mats or "ivory" not in mats[0] or _SUBSTITUTE_IVORY.search(mats[0]):
            return None
        # "bone or ivory", "ivory or bone": the cataloguer was not sure; "ivory (walrus or elephant)" is sure
        alternatives = re.split(r"\bor\b", re.sub(r"\([^)]*\)", "", mats[0]))
        return "ivory" if all("ivory" in a for a in alternatives) else None
    if any(term in text for term in CERAMIC_TERMS):
        return "non_ivory"
    return None


CULTURE_GROUPS = [
    # first match wins: names that hold another group's needle come first ("American Indian" holds "India")
    ("American Indian", "American"), ("Native American", "American"), ("West Indi", "Caribbean"),
    ("India", "Indian"), ("Indian", "Indian"), ("Mughal", "Indian"), ("Rajput", "Indian"),
    ("China", "Chinese"), ("Chinese", "Chinese"),
    ("Japan", "Japanese"),
    ("Korea", "Korean"),
    ("America", "American"),
    ("Iran", "Persian"), ("Persia", "Persian"),
    ("France", "French"), ("French", "French"),
    ("Ital", "Italian"),
    ("Dutch", "Dutch"), ("Netherlands", "Dutch"), ("Flemish", "Flemish"),
    ("British", "British"), ("English", "British"),
    ("Spanish", "Spanish"), ("Spain", "Spanish"),
    ("German", "German"),
    ("Tibet", "Tibetan"),
    ("Nepal", "Nepalese"),
]


def culture_group(culture: str | None) -> str | None:
    """Group culture variants: 'India (Gujarat)', 'North India' -> 'Indian'. None when empty."""
    if not culture or not culture.strip():
        return None
    for needle, group in CULTURE_GROUPS:
        if needle.lower() in culture.lower():
            return group
    return culture.strip()


def is_painting(row) -> bool:
    text = f"{row.get('classification', '')} {row.get('objectName', '')}".lower()
    return "painting" in text


def recipe_filter(recipe: str | None):
    """A predicate on API-shaped records: would ``recipe`` use this object? (None: keep all)"""
    if recipe is None:
        return None
    if recipe == "ivory":
        return lambda rec: ivory_label(rec.get("medium")) is not None
    if recipe == "culture":
        return lambda rec: is_painting(rec) and culture_group(rec.get("culture")) is not None
    raise ValueError(f"recipe {recipe!r} cannot filter records")


def build(recipe: str, collection: str | Path, out_dir: str | Path, *, top: int = 4, min_images: int = 4,
          seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> pd.DataFrame:
    """Apply ``recipe`` to a collection folder (or its collection.csv); write manifest + card into ``out_dir``."""
    from .manifest import _read_table, write_manifest
    from .card import write_card

    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    collection = Path(collection)
    csv_path = collection / "collection.csv" if collection.is_dir() else collection
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no collection.csv (run `artsentry collect` first)")
    col = _read_table(csv_path)  # as a manifest is: a row longer than the header is an error, not a shift
    needed = {"ivory": ["path", "object_id", "medium"], "culture": ["path", "object_id", "culture"],
              "instance": ["path", "object_id"]}[recipe]
    if recipe == "culture" and not {"classification", "objectName"} & set(col.columns):
        needed.append("classification")  # or objectName: what says a painting is one
    missing = [c for c in needed if c not in col.columns]
    if missing:
        raise ValueError(f"{csv_path}: the {recipe} recipe needs the column(s) {', '.join(missing)}; "
                         f"the table has {', '.join(col.columns)}")
    col["path"] = [str((csv_path.parent / p).resolve()) for p in col["path"]]
    gone = [not os.path.isfile(p) for p in col["path"]]
    if any(gone):  # deleted or moved since the crawl: counted in no class, the card's figures included
        names = list(col.loc[gone, "path"])
        log.warning("%s: %d listed image(s) not found, left out: %s", csv_path, len(names), first_names(names, 5))
        col = col[[not g for g in gone]].reset_index(drop=True)
    out_dir = Path(out_dir)
    # a manifest.csv no build wrote (a run's split, one made by hand) is not replaced
    if (out_dir / "manifest.csv").exists() and not (out_dir / "card.json").is_file():
        raise ValueError(f"{out_dir} holds a manifest.csv that no 'artsentry build' wrote (a run folder's split, "
                         "or a table of its own), which this build would replace; choose a new or empty --out")
    built = _built_by(out_dir)  # the same recipe again (a collection grown since) rebuilds; another is refused
    if built.get("recipe") not in (None, recipe):
        raise ValueError(f"{out_dir} holds the {built['recipe']} dataset built from {built.get('collection', '?')}, "
                         f"which this {recipe} build would replace; choose another --out (or delete that one)")

    if recipe == "ivory":
        col["label"] = col["medium"].map(ivory_label)
        df = col[col["label"].notna()].copy()
        why = "no image's medium names ivory as its main material, or a ceramic"
    elif recipe == "culture":
        df = col[col.apply(is_painting, axis=1)].copy()
        df["label"] = df["culture"].map(culture_group)
        df = df[df["label"].notna()]
        why = "no image is of a painting whose culture the recipe groups"
        counts = df["label"].value_counts()
        keep = sorted(counts.index, key=lambda k: (-counts[k], k))[:top]
        df = df[df["label"].isin(keep)].copy()
    else:
        counts = col.groupby("object_id")["path"].transform("size")
        df = col[counts >= min_images].copy()
        why = (f"no object has {min_images} or more photos (the most: {int(counts.max()) if len(counts) else 0}); "
               "lower --min-images")
        df["label"] = df["object_id"]
        df["split"] = split_instances(df, seed, val_fraction, test_fraction)
    if df.empty:  # before --out is made: a refused build leaves no empty folder behind
        raise ValueError(f"recipe {recipe!r} selected no images from {csv_path} ({len(col)} read): {why}")
    if df["label"].nunique() < 2:
        raise ValueError(f"recipe {recipe!r} found only one class ({df['label'].iloc[0]}) in {csv_path}")
    warnings = []  # said now, and kept in the dataset's card
    if recipe != "instance":  # split by object: a class of one or two objects misses a split, or two
        objects = df.groupby("label")["object_id"].nunique()
        few = [f"{k} ({n} object{'s' * (n != 1)})"
               for k, n in sorted(objects.items(), key=lambda kv: (kv[1], kv[0])) if n < 3]
        if few:
            warnings.append(f"{len(few)} class(es) hold fewer than 3 objects: {first_names(few, 5)}; a split by "
                            "object cannot give each photos in train, validation and test, so they are learnt from "
                            "little and barely tested" + (" (--top N keeps the N largest)" if recipe == "culture"
                                                          else ""))
    for warning in warnings:
        log.warning("%s", warning)
    df = df.sort_values(["label", "object_id", "path"]).reset_index(drop=True)
    front = ["path", "label", "object_id"] + (["split"] if "split" in df else [])
    df = df[front + [c for c in df.columns if c not in front]]
    out = df.copy()
    out["path"] = [os.path.relpath(p, out_dir.resolve()) for p in df["path"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(out, out_dir / "manifest.csv")
    write_card(df, col, out_dir, title=f"{recipe} dataset from {csv_path}", warnings=warnings,
               made_by={"recipe": recipe, "collection": str(csv_path.resolve())})
    return df


def _built_by(out_dir: Path) -> dict:
    """How the dataset in ``out_dir`` was made, as its card.json says (``recipe``, ``collection``); empty when
    there is none, or it is unreadable, or it is a card of a build from before the recipe was recorded."""
    from ..files import read_json_object

    try:
        return read_json_object(out_dir / "card.json")
    except (OSError, ValueError):
        return {}
