"""Performance per patient subgroup: AUROC with a patient-bootstrap CI and the true- / false-negative rate at a
frozen threshold, each with its gap to the whole split.

Subgroups come from the label files' metadata (docs/design.md, `LabelTable.frame`): `sex` (M / F, CheXpert's
Male / Female read as M / F), `age` bands (left-closed: `20-40` holds 20 <= age < 40; the last band is open,
`80+`), `view` (NIH `View Position` PA / AP; CheXpert `AP/PA`, or `Lateral` for laterals) and, when laterals
are kept (CheXpert `frontal_only=false`), `frontal_lateral`. A row without the attribute falls in the group
`unknown`, so every image is in one group of every attribute.

The false-negative rate among the positives at a threshold chosen on validation is the "underdiagnosis" rate
of Seyyed-Kalantari et al. 2021 ("Underdiagnosis bias of artificial intelligence algorithms applied to chest
radiographs in under-served patient populations", Nature Medicine 27:2176-2182), here per pathology. AUROC
and its interval come from `chestx.metrics.bootstrap` (sklearn point estimate, patients resampled within the
group); a group too small for a number gets NaN and a `note` that says why.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from chestx.metrics.auroc import _check_scores, check_eval_labels
from chestx.metrics.bootstrap import bootstrap_auroc, check_patient_ids

log = logging.getLogger(__name__)

__all__ = ["ATTRIBUTES", "DEFAULT_AGE_EDGES", "SUBGROUP_COLUMNS", "age_bands", "check_subgroup_options",
           "subgroup_masks", "subgroup_table"]

ATTRIBUTES: tuple[str, ...] = ("sex", "age", "view", "frontal_lateral")  # frame columns, in table order
OPTIONAL_ATTRIBUTES: tuple[str, ...] = ("frontal_lateral",)  # only CheXpert frames have it
DEFAULT_AGE_EDGES: tuple[float, ...] = (0.0, 20.0, 40.0, 60.0, 80.0)
ALL = "all"
UNKNOWN = "unknown"
SUBGROUP_COLUMNS: tuple[str, ...] = (
    "attribute", "group", "pathology", "n_images", "n_patients", "n_pos", "n_neg", "auroc", "auroc_low",
    "auroc_high", "auroc_gap", "threshold", "tpr", "fnr", "tpr_gap", "fnr_gap", "note",
)
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}
_MISSING = {"", "nan", "none", "unknown", "<na>"}


def check_subgroup_options(age_edges: Sequence[float], min_images: int, min_per_class: int, n_resamples: int,
                           ci: float, prefix: str = "") -> tuple[float, ...]:
    """Validate the options (ValueError naming `<prefix><key>`, the value and the fix); returns the edges as floats."""
    try:
        edges = tuple(float(e) for e in age_edges)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{prefix}age_edges={age_edges!r} must be a list of numbers, e.g. [0, 20, 40, 60, 80]") from err
    if not edges or not all(math.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"{prefix}age_edges={list(age_edges)} must be finite, strictly increasing band starts in "
                         "years, e.g. [0, 20, 40, 60, 80] (bands 0-20, ..., 60-80, 80+)")
    for key, value, low in (("min_images", min_images, 1), ("min_per_class", min_per_class, 1),
                            ("resamples", n_resamples, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{prefix}{key}={value!r} must be an integer >= {low}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"{prefix}ci={ci!r} must be in (0, 1), e.g. 0.95")
    return edges


def age_bands(age: np.ndarray, edges: Sequence[float] = DEFAULT_AGE_EDGES) -> np.ndarray:
    """Band name per age: `a-b` for a <= age < b, `<first` below the first edge, `last+`; NaN -> `unknown`.

    age: (N,) float years -> (N,) object array of band names.
    """
    edges = np.asarray(edges, dtype=np.float64)
    age = np.asarray(age, dtype=np.float64)
    names = [f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:])] + [f"{edges[-1]:g}+"]
    index = np.searchsorted(edges, age, side="right")  # (N,) 0 = below the first edge
    out = np.asarray(names, dtype=object)[np.minimum(index, len(names) - 1)]
    out[np.isnan(age)] = UNKNOWN
    return out


def _band_order(edges: Sequence[float]) -> list[str]:
    return [f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:])] + [f"{edges[-1]:g}+"]


def _clean_text(values: pd.Series) -> np.ndarray:
    """Strings with blanks / NaN / 'Unknown' as `unknown`. (N,) object."""
    text = values.astype("object").where(values.notna(), "").astype(str).str.strip()
    return np.where(text.str.lower().isin(_MISSING), UNKNOWN, text).astype(object)


def _attribute_values(frame: pd.DataFrame, attribute: str, age_edges: Sequence[float]) -> tuple[np.ndarray, list[str]]:
    """(N,) group name per row and the groups in table order (unknown last)."""
    if attribute == "age":
        values = age_bands(pd.to_numeric(frame["age"], errors="coerce").to_numpy(dtype=np.float64), age_edges)
        order = _band_order(age_edges)
    else:
        values = _clean_text(frame[attribute])
        if attribute == "sex":
            values = np.array([_SEX.get(v.lower(), v) for v in values], dtype=object)
        order = sorted(set(values) - {UNKNOWN})
    present = set(values)
    return values, [g for g in [*order, UNKNOWN] if g in present]


def subgroup_masks(frame: pd.DataFrame, age_edges: Sequence[float] = DEFAULT_AGE_EDGES,
                   attributes: Sequence[str] = ATTRIBUTES) -> list[tuple[str, str, np.ndarray]]:
    """(attribute, group, mask (N,) bool) for every group of every attribute of `frame`.

    `frontal_lateral` is left out when the frame lacks it or holds one value only (frontal_only=true);
    a missing required column raises ValueError naming it.
    """
    age_edges = check_subgroup_options(age_edges, 1, 1, 1, 0.5)
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"attributes {unknown} are not subgroup attributes; choose from {list(ATTRIBUTES)}")
    missing = [a for a in attributes if a not in frame.columns and a not in OPTIONAL_ATTRIBUTES]
    if missing:
        raise ValueError(f"the frame lacks the metadata columns {missing} (found {list(frame.columns)}): subgroups "
                         "need the label file's sex / age / view (chestx predictions.csv carries them since "
                         "subgroups were added; re-score the run with fit=false ckpt_path=<its best.ckpt>)")
    out: list[tuple[str, str, np.ndarray]] = []
    for attribute in attributes:
        if attribute not in frame.columns:
            continue
        values, groups = _attribute_values(frame, attribute, age_edges)
        if attribute in OPTIONAL_ATTRIBUTES and len(groups) < 2:
            log.info("Subgroups: %s is %s for every image: no %s groups", attribute, groups, attribute)
            continue
        out.extend((attribute, group, values == group) for group in groups)
    return out


def _group_rows(probs: np.ndarray, labels: np.ndarray, patients: np.ndarray, thresholds: np.ndarray,
                pathologies: Sequence[str], min_images: int, min_per_class: int, n_resamples: int, seed: int,
                ci: float) -> list[dict]:
    """One row per pathology for the images of one group. probs, labels: (n, K); patients: (n,); thresholds: (K,)."""
    n_pos = (labels == 1.0).sum(axis=0)  # (K,)
    n_neg = (labels == 0.0).sum(axis=0)  # (K,)
    n_known = n_pos + n_neg
    big = n_known >= min_images
    auc_ok = big & (n_pos >= min_per_class) & (n_neg >= min_per_class)  # (K,)
    rate_ok = big & (n_pos >= min_per_class) & np.isfinite(thresholds)  # (K,)
    auc, low, high = (np.full(len(pathologies), np.nan) for _ in range(3))
    invalid = np.zeros(len(pathologies), dtype=np.int64)
    if auc_ok.any():
        masked = np.where(auc_ok[None, :], labels, np.nan)  # (n, K): too-small columns are skipped
        boot = bootstrap_auroc(probs, masked, patients, n_resamples=n_resamples, seed=seed, ci=ci, warn_invalid=False)
        auc, low, high = boot["auroc"][0], boot["lower"][0], boot["upper"][0]  # (K,) each
        invalid = np.where(auc_ok, boot["n_invalid"][0], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tp = ((probs >= thresholds[None, :]) & (labels == 1.0)).sum(axis=0)  # (K,) NaN threshold -> no positives
        tpr = np.where(rate_ok, tp / np.maximum(n_pos, 1), np.nan)
    rows = []
    for k, name in enumerate(pathologies):
        notes = []
        if not big[k]:
            notes.append(f"{n_known[k]} labelled images < min_images={min_images}")
        else:
            if n_pos[k] < min_per_class:
                notes.append(f"{n_pos[k]} positives < min_per_class={min_per_class}: no AUROC, no TPR/FNR")
            if n_neg[k] < min_per_class:
                notes.append(f"{n_neg[k]} negatives < min_per_class={min_per_class}: no AUROC")
            if n_pos[k] >= min_per_class and not np.isfinite(thresholds[k]):
                notes.append("no validation-frozen threshold: no TPR/FNR")
        if invalid[k]:
            notes.append(f"CI over {n_resamples - invalid[k]} of {n_resamples} resamples (the others drew one class)")
        rows.append({"pathology": name, "n_pos": int(n_pos[k]), "n_neg": int(n_neg[k]),
                     "auroc": float(auc[k]) if auc_ok[k] else np.nan,
                     "auroc_low": float(low[k]) if auc_ok[k] else np.nan,
                     "auroc_high": float(high[k]) if auc_ok[k] else np.nan,
                     "threshold": float(thresholds[k]), "tpr": float(tpr[k]), "fnr": 1.0 - float(tpr[k]),
                     "note": "; ".join(notes)})
    return rows


def subgroup_table(
    frame: pd.DataFrame,
    probs: np.ndarray,
    labels: np.ndarray,
    pathologies: Sequence[str],
    thresholds: np.ndarray | None = None,
    age_edges: Sequence[float] = DEFAULT_AGE_EDGES,
    min_images: int = 20,
    min_per_class: int = 2,
    n_resamples: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    attributes: Sequence[str] = ATTRIBUTES,
) -> pd.DataFrame:
    """Per pathology x subgroup: counts, AUROC [CI], TPR / FNR at `thresholds`, gaps to the whole split.

    frame: (N rows) `patient_id` and the attribute columns (`sex`, `age`, `view`, optional `frontal_lateral`),
    aligned with probs, labels: (N, K), labels 1 / 0 / NaN (NaN = unknown, not scored); thresholds: (K,)
    frozen on validation (predicted positive: prob >= threshold; NaN or None: no TPR / FNR).
    A number needs `min_images` labelled images in the group, `min_per_class` positives (AUROC also
    `min_per_class` negatives); otherwise it is NaN and `note` says why. The first K rows (attribute and
    group `all`) are the whole split; `*_gap` = group value - whole-split value. Columns: SUBGROUP_COLUMNS.
    """
    edges = check_subgroup_options(age_edges, min_images, min_per_class, n_resamples, ci)
    labels = check_eval_labels(labels)
    names = list(pathologies)
    if labels.ndim != 2 or labels.shape != (len(frame), len(names)):
        raise ValueError(f"labels shape {labels.shape} != (N, K) = ({len(frame)} frame rows, {len(names)} pathologies)")
    probs = _check_scores(probs, labels)
    thresholds = np.full(len(names), np.nan) if thresholds is None else np.asarray(thresholds, np.float64).reshape(-1)
    if thresholds.shape != (len(names),):
        raise ValueError(f"{thresholds.size} thresholds for {len(names)} pathologies: pass one per pathology (or None)")
    if "patient_id" not in frame.columns:
        raise ValueError(f"the frame has no patient_id column (found {list(frame.columns)}): the bootstrap resamples "
                         "patients")
    patients = check_patient_ids(frame["patient_id"].to_numpy(), len(frame)).astype(str)  # (N,); missing -> ValueError
    groups = [(ALL, ALL, np.ones(len(frame), dtype=bool)), *subgroup_masks(frame, edges, attributes)]
    rows = []
    for attribute, group, mask in groups:
        head = {"attribute": attribute, "group": group, "n_images": int(mask.sum()),
                "n_patients": int(pd.unique(patients[mask]).size)}
        # an attribute no image has (MIMIC-CXR without data.patients_csv, a CSV without sex_column): say so
        absent = f"no image has a {attribute} in the label file, so there are no {attribute} subgroups" \
            if group == UNKNOWN and mask.all() else ""
        for row in _group_rows(probs[mask], labels[mask], patients[mask], thresholds, names, min_images,
                               min_per_class, n_resamples, seed, ci):
            row["note"] = "; ".join(n for n in (absent, row["note"]) if n)
            rows.append({**head, **row})
    table = pd.DataFrame(rows)
    whole = table.iloc[: len(names)].set_index("pathology")
    for metric in ("auroc", "tpr", "fnr"):  # a group's counts never exceed the whole split's: its gap is defined
        table[f"{metric}_gap"] = table[metric].to_numpy() - whole.loc[table["pathology"], metric].to_numpy()
    return table[list(SUBGROUP_COLUMNS)]
