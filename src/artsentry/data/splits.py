"""Seeded, stratified splits that never put one object on two sides.

Images are grouped by ``object_id``; groups are also merged when their files
are byte-identical (the same photo published under two ids would otherwise
leak from train into test). Whole groups are then dealt to train / val / test
per label so that each split keeps the label proportions.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..files import file_sha256
from .manifest import SPLITS, ManifestError

log = logging.getLogger(__name__)


def leakage_groups(df: pd.DataFrame, hashes: pd.Series | None = None) -> np.ndarray:
    """Group index per row: rows sharing an object id or identical file content share a group."""
    if hashes is None:
        hashes = df["path"].map(file_sha256)
    parent = list(range(len(df)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for key in (df["object_id"].astype(str).to_numpy(), np.asarray(hashes)):
        first: dict[str, int] = {}
        for i, k in enumerate(key):
            if k in first:
                a, b = find(i), find(first[k])
                if a != b:
                    parent[a] = b
            else:
                first[k] = i
    roots = np.array([find(i) for i in range(len(df))])
    _, group = np.unique(roots, return_inverse=True)
    return group


def conflicting_labels(df: pd.DataFrame, hashes: pd.Series) -> list[list[int]]:
    """Positions of the rows of each image file (by content) that ``df`` labels more than one way:
    the same photo as ivory and as not ivory can be learnt neither way, and is wrong one way in test."""
    labels = pd.Series(df["label"].astype(str).to_numpy())
    by_file = labels.groupby(np.asarray(hashes))
    mixed = by_file.nunique()
    mixed = set(mixed.index[mixed > 1])
    return [list(ix) for key, ix in by_file.groups.items() if key in mixed]


def split_instances(df: pd.DataFrame, seed: int, val_fraction: float, test_fraction: float) -> pd.Series:
    """Instance task: split the photos of each object (its class): its share of them (at least
    one) to test where it has three or more, to val where two or more are left, the rest train.
    Every object keeps at least one training photo, whatever the fractions; a fraction of 0
    gives that split no photo."""
    rng = np.random.default_rng(seed)
    split = pd.Series("train", index=df.index, dtype=object)
    for _, idx in df.groupby("label").groups.items():
        idx = list(idx)
        rng.shuffle(idx)
        n = len(idx)
        # test leaves two photos (val and train), val leaves one (train): none where only one is left
        n_test = min(max(1, round(n * test_fraction)), n - 2) if n >= 3 and test_fraction > 0 else 0
        n_val = min(max(1, round(n * val_fraction)), n - n_test - 1) if val_fraction > 0 else 0
        split[idx[:n_test]] = "test"
        split[idx[n_test:n_test + n_val]] = "val"
    return split


def is_instance_manifest(df: pd.DataFrame) -> bool:
    """Each object is its own class (the instance task)."""
    return bool((df["label"].astype(str) == df["object_id"].astype(str)).all()) and df["object_id"].duplicated().any()


def split_manifest(
    df: pd.DataFrame,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    hashes: pd.Series | None = None,
) -> pd.DataFrame:
    """Return a copy of ``df`` with a ``split`` column (train / val / test).

    A manifest that already has a complete ``split`` column is returned as is,
    after checking that no object crosses splits. Instance manifests (every label is the
    row's object id, ``artsentry build instance``) split the photos of each object by
    design: for them only identical image files may not cross splits.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1")
    if hashes is None:
        hashes = df["path"].map(file_sha256)
    conflicts = conflicting_labels(df, hashes)
    if conflicts:
        rows = df.iloc[conflicts[0]]
        log.warning("%d image file(s) are labelled more than one way (the same content under several rows), "
                    "e.g. %s: check the labels; each is kept in one split, where it cannot be right both ways",
                    len(conflicts), ", ".join(f"{p} as {l!r}" for p, l in zip(rows["path"], rows["label"])))
    out = df.copy()
    if "split" in df.columns and df["split"].isin(SPLITS).all():
        if is_instance_manifest(df):
            groups = leakage_groups(df.assign(object_id=[f"row{i}" for i in range(len(df))]), hashes)
            what = "identical image file(s)"
        else:
            groups = leakage_groups(df, hashes)
            what = "object(s) (or identical images)"
        crossing = pd.Series(df["split"].to_numpy()).groupby(groups).nunique()
        if (crossing > 1).any():
            raise ManifestError(f"the manifest's split column puts {int((crossing > 1).sum())} {what} "
                                "in more than one split")
        return out
    if is_instance_manifest(df):
        out["split"] = split_instances(df, seed, val_fraction, test_fraction).to_numpy()
        return out
    groups = leakage_groups(df, hashes)

    rng = np.random.default_rng(seed)
    group_split = np.empty(groups.max() + 1, dtype=object)
    # A group's stratum is its most common label.
    labels = df["label"].astype(str).to_numpy()
    group_label = pd.Series(labels).groupby(groups).agg(lambda s: s.value_counts().index[0])
    group_size = pd.Series(groups).value_counts().sort_index()
    for label in sorted(group_label.unique()):
        ids = group_label.index[group_label == label].to_numpy()
        ids = ids[rng.permutation(len(ids))]
        sizes = group_size.loc[ids].to_numpy()
        total = sizes.sum()
        cum = np.cumsum(sizes) - sizes  # images dealt before this group
        n_test = round(total * test_fraction)
        n_val = round(total * val_fraction)
        which = np.where(cum < n_test, "test", np.where(cum < n_test + n_val, "val", "train"))
        group_split[ids] = which
    out["split"] = group_split[groups]
    return out
