"""The finding vocabulary as a table: which dataset labels which finding, under which name.

The rule lives in `chestx.data.labels.table` (FINDINGS: canonical names and their synonyms; NOT_SHARED; NOT_MATCHED);
this module lists every dataset's findings (each dataset module's own constant), what each dataset's files hold that
no finding reads (`left_out`, from the same modules' constants), and renders the dataset x finding table of
docs/datasets/findings.md (`python -m chestx.data.datasets.vocabulary > docs/datasets/findings.md`; a test
checks the file is current).
"""
from __future__ import annotations

from chestx.data.datasets.nih_expert import EXPERT_FINDINGS, FINDING_SETS, FINDING_SOURCES
from chestx.data.datasets.padchest import NORMAL_TERM, NOT_MAPPED, PADCHEST_FINDINGS, UNLABELLED_TERMS
from chestx.data.datasets.rsna_pneumonia import RSNA_CLASSES, RSNA_FINDINGS
from chestx.data.datasets.siim import SIIM_PATHOLOGY
from chestx.data.datasets.vindr_cxr import (
    PHYSIONET_LABELS, VINDR_FINDINGS, VINDR_KAGGLE_FINDINGS, VINDR_LABELS,
)
from chestx.data.labels.table import (
    CHEXPERT_COMPETITION_TASKS, CHEXPERT_PATHOLOGIES, NIH_PATHOLOGIES, NO_FINDING, NOT_MATCHED, NOT_SHARED,
    canonical_finding,
)

# data config name -> every finding the dataset can label (its own names)
DATASET_FINDINGS: dict[str, tuple[str, ...]] = {
    "nih": (*NIH_PATHOLOGIES, NO_FINDING),
    "chexpert": CHEXPERT_PATHOLOGIES,
    "mimic_cxr": CHEXPERT_PATHOLOGIES,
    "padchest": PADCHEST_FINDINGS,
    "vindr_cxr": (*VINDR_FINDINGS, NO_FINDING),
    "rsna_pneumonia": RSNA_FINDINGS,
    "siim": (SIIM_PATHOLOGY,),
    "nih_expert": EXPERT_FINDINGS,
}


def finding_table() -> dict[str, dict[str, str]]:
    """canonical finding -> {dataset: its own name}, findings labelled by most datasets first."""
    table: dict[str, dict[str, str]] = {}
    for dataset, names in DATASET_FINDINGS.items():
        for name in names:
            table.setdefault(canonical_finding(name), {})[dataset] = name
    return dict(sorted(table.items(), key=lambda item: (-len(item[1]), item[0])))


def _names(items) -> str:
    return ", ".join(f"`{item}`" for item in items)


def left_out() -> dict[str, str]:
    """data config name -> what its files hold that no finding column reads, and why (one Markdown paragraph)."""
    padchest_terms = [t for t in NOT_MAPPED if t != NORMAL_TERM and t not in UNLABELLED_TERMS]
    rsna_positive, rsna_normal = RSNA_CLASSES[0], RSNA_CLASSES[-1]  # "Lung Opacity" -> Target, "Normal" -> No Finding
    rsna_other = [c for c in RSNA_CLASSES if c not in (rsna_positive, rsna_normal)]
    vindr_unmapped = [label for label in PHYSIONET_LABELS if label not in VINDR_LABELS]
    physionet_only = [f for f in VINDR_FINDINGS if f not in VINDR_KAGGLE_FINDINGS]
    no_nih_label = [name for name in EXPERT_FINDINGS if FINDING_SOURCES[name][1] is None]
    shared_column = [name for name in FINDING_SETS["nih"] if FINDING_SOURCES[name][0] != name]
    out = {
        "nih": "nothing: the 14 labels of `Finding Labels`, and `No Finding` (data.include_no_finding).",
        "chexpert": f"nothing with data.tasks=all (the 14 columns); the default, data.tasks=competition, keeps "
                    f"the {len(CHEXPERT_COMPETITION_TASKS)} competition tasks ({_names(CHEXPERT_COMPETITION_TASKS)}). "
                    "Uncertain (-1) and blank cells are kept under data.uncertainty / data.blank, not dropped.",
        "mimic_cxr": "as chexpert: the same 14 columns from the chosen labeller (data.labeler), the same data.tasks "
                     "default.",
        "padchest": f"{len(padchest_terms)} report terms that are none of its findings (`NOT_MAPPED` in "
                    "chestx/data/datasets/padchest.py, data.matching=table): no finding of chestx has their "
                    "definition, so they set no column (an image with only such terms is 0 for every finding). "
                    f"`{NORMAL_TERM}` sets only frame.no_finding (PadChest has no No Finding column); "
                    f"{_names(UNLABELLED_TERMS)} (the report could not be labelled) makes the row unknown (NaN). "
                    f"The terms: {_names(padchest_terms)}.",
        "vindr_cxr": f"{_names(vindr_unmapped)} is not a finding: it is No Finding (never shared). With "
                     f"data.findings=kaggle (the default: the 14 labels both releases have) the {len(physionet_only)} "
                     f"labels only the PhysioNet release has are left out: {_names(physionet_only)} "
                     "(data.findings=all reads them from the PhysioNet layout).",
        "rsna_pneumonia": f"the detailed class {_names(rsna_other)}: abnormal, but without an opacity suspicious for "
                          "pneumonia; what is abnormal is not named, so no finding can hold it. Those images are 0 for "
                          f"Pneumonia and Lung Opacity (`Target` 0) and not No Finding (the class `{rsna_normal}`). "
                          "The default data.findings=[Pneumonia] reads one column of the three.",
        "siim": f"nothing as a label: {SIIM_PATHOLOGY} is 1 where the image has a mask (`EncodedPixels` not -1); the "
                "masks themselves are read for localisation (pointing game), not as findings.",
        "nih_expert": f"with data.labels=original, {_names(no_nih_label)}: NIH has no label of Google's definition, so "
                      f"they are unknown (NaN), not guessed. With data.findings=nih, {_names(shared_column)} both hold "
                      f"Google's one `{FINDING_SOURCES[shared_column[0]][0]}` label.",
    }
    missing = [d for d in DATASET_FINDINGS if d not in out]
    if missing:
        raise KeyError(f"vocabulary.left_out() has no entry for datasets {missing}: add one per DATASET_FINDINGS key")
    return {d: out[d] for d in DATASET_FINDINGS}


def markdown() -> str:
    """docs/datasets/findings.md."""
    datasets = list(DATASET_FINDINGS)
    lines = ["# One finding vocabulary", "",
             "Every finding chestx reads, under its canonical name (rows), and the name each dataset gives it "
             "(columns; ✓ = the canonical name, — = not labelled). Two datasets share a finding exactly when it is "
             "in one row; cross-dataset scoring (`test_data`, `chestx.evaluate ckpt=`) and `data=merge` use these "
             "rows and nothing else. The rule is `chestx.data.labels.table.FINDINGS`; this page is generated by "
             "`python -m chestx.data.datasets.vocabulary` (a test checks it is current).", "",
             "| finding | " + " | ".join(datasets) + " |", "|:---|" + "|".join([":---:"] * len(datasets)) + "|"]
    for finding, names in finding_table().items():
        cells = ["—" if d not in names else "✓" if names[d] == finding else f"`{names[d]}`" for d in datasets]
        label = f"{finding} (never shared)" if finding in NOT_SHARED else finding
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Never shared", ""]
    lines += [f"- **{name}**: {reason}." for name, reason in NOT_SHARED.items()]
    lines += ["", "## Alike, but not matched", ""]
    lines += [f"- {a} ≠ {b}: {reason}." for a, b, reason in NOT_MATCHED]
    lines += ["", "## Left out, per dataset", "",
              "What a dataset's files hold that no column above reads, and why (from each dataset module's constants).",
              ""]
    lines += [f"- **{dataset}**: {text}" for dataset, text in left_out().items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
