"""CheXpert: read Stanford's `train.csv` / `valid.csv` into a `LabelTable` under an uncertainty policy.

Source: Irvin et al. 2019, "CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels"
(U-Ignore, U-Zeros, U-Ones, U-MultiClass) and Pham et al. 2021 (label smoothing of uncertain
labels, `lsr_zeros` / `lsr_ones`). Each observation column holds 1.0 (positive), 0.0 (negative),
-1.0 (uncertain) or blank (not mentioned).

The rules are reusable: `parse_label_cells` reads such columns from text (also 1 / 0 / -1, stripped),
`apply_label_rules` turns the 1 / 0 / -1 / NaN matrix into labels and `uncertain` under the policies;
MIMIC-CXR (`chestx.data.datasets.mimic_cxr`) and a user's CSV (`chestx.data.datasets.csv`) use them as they are.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from chestx.data.labels.table import (
    CHEXPERT_COMPETITION_TASKS, CHEXPERT_PATHOLOGIES, NO_FINDING, DataError, LabelTable, read_label_csv,
    select_pathologies,
)
from chestx.data.datasets.base import ChestXData, LabelFile, view_mask
from chestx.data.datasets.image_finders import InFolders
from chestx.data.datasets.registry import register_dataset

log = logging.getLogger(__name__)

# in data.root, the first holding train.csv is the dataset folder
DATASET_DIRS: tuple[str, ...] = ("CheXpert-v1.0-small", "CheXpert-v1.0", ".")
UNCERTAINTY_POLICIES: tuple[str, ...] = ("ignore", "zeros", "ones", "multiclass", "lsr_zeros", "lsr_ones")
BLANK_POLICIES: tuple[str, ...] = ("zeros", "mask")
CHEXPERT_META_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
DEFAULT_KEY = "default"
# Under blank="mask", rows with No Finding = 1 have their blank cells set to 0, except these
# (a normal study can still carry devices; torchxrayvision makes the same exception).
BLANK_KEPT_UNDER_NO_FINDING: tuple[str, ...] = ("Support Devices",)


def resolve_uncertainty(
    uncertainty: str | Mapping[str, str], pathologies: Sequence[str], known: Sequence[str] = CHEXPERT_PATHOLOGIES,
) -> list[str]:
    """One policy per pathology from a policy name or a mapping {pathology: policy, "default": policy}.

    A mapping without "default" uses "ignore" for the pathologies it does not name. Its keys must be
    among `known` (the dataset's label columns; CheXpert's 14 observations by default).
    """
    def check(policy: object, where: str) -> str:
        if policy not in UNCERTAINTY_POLICIES:
            raise DataError(
                f"unknown uncertainty policy {policy!r} ({where}); valid policies: {list(UNCERTAINTY_POLICIES)}"
            )
        return str(policy)

    if isinstance(uncertainty, str):
        return [check(uncertainty, "uncertainty")] * len(pathologies)
    if not isinstance(uncertainty, Mapping):
        raise DataError(
            f"uncertainty={uncertainty!r} must be a policy name or a mapping "
            f"{{pathology: policy, 'default': policy}}; valid policies: {list(UNCERTAINTY_POLICIES)}"
        )
    default = check(uncertainty.get(DEFAULT_KEY, "ignore"), "uncertainty.default")
    per = {str(k): check(v, f"uncertainty[{k!r}]") for k, v in uncertainty.items() if k != DEFAULT_KEY}
    unknown = [k for k in per if k not in known]
    if unknown:
        raise DataError(
            f"uncertainty names unknown pathologies {unknown}; valid keys: {[DEFAULT_KEY, *pathologies]}"
        )
    unused = [k for k in per if k not in pathologies]
    if unused:
        log.warning("uncertainty policies for %s ignored: not among the selected pathologies %s",
                    unused, list(pathologies))
    return [per.get(p, default) for p in pathologies]


def _check_range(rng: Sequence[float], name: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in rng)
    if not 0.0 <= lo <= hi <= 1.0:
        raise DataError(f"{name}={tuple(rng)} must be (low, high) with 0 <= low <= high <= 1")
    return lo, hi


def check_label_options(
    blank: str, lsr_zeros: Sequence[float] = (0.0, 0.3), lsr_ones: Sequence[float] = (0.55, 0.85),
) -> dict[str, tuple[float, float]]:
    """Validate `blank` and the LSR ranges; returns {"lsr_zeros": (low, high), "lsr_ones": (low, high)}."""
    if blank not in BLANK_POLICIES:
        raise DataError(f"blank={blank!r} is not one of {list(BLANK_POLICIES)}")
    return {"lsr_zeros": _check_range(lsr_zeros, "lsr_zeros"), "lsr_ones": _check_range(lsr_ones, "lsr_ones")}


def apply_label_rules(
    source: np.ndarray,
    names: Sequence[str],
    policies: Sequence[str],
    blank: str,
    normal: np.ndarray,
    lsr_ranges: Mapping[str, tuple[float, float]],
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """CheXpert's label rules on a source matrix: (labels float32 (N, K), uncertain bool (N, K)).

    `source` (N, K) holds 1 / 0 / -1 (uncertain) / NaN (blank, not mentioned) for the pathologies
    `names`, `policies` one uncertainty policy per column (`resolve_uncertainty`), `normal` (N,) the
    labeller's No Finding = 1. Blank cells become 0 (`blank="zeros"`) or stay NaN (`"mask"`), except
    that under `mask` a normal row's blank cells are 0 (Support Devices excepted). Uncertain cells
    become NaN (`ignore`, `multiclass`), 0 (`zeros`), 1 (`ones`) or uniform draws from the `lsr_*`
    range (one numpy generator seeded with `seed`, one draw per row for each LSR column in column
    order). Shared by CheXpert, MIMIC-CXR and `data=csv`.
    """
    source = np.asarray(source, dtype=np.float32)  # (N, K)
    normal = np.asarray(normal, dtype=bool)  # (N,)
    uncertain = source == -1.0  # (N, K) bool
    labels = source.copy()
    if blank == "zeros":
        labels[np.isnan(labels)] = 0.0
    else:  # mask: blank is unknown, except that No Finding = 1 says the other findings are absent
        absent = [k for k, name in enumerate(names) if name not in BLANK_KEPT_UNDER_NO_FINDING]
        rows = np.flatnonzero(normal)
        block = labels[np.ix_(rows, absent)]  # (n_normal, K') view copy
        block[np.isnan(block)] = 0.0
        labels[np.ix_(rows, absent)] = block
    rng = np.random.default_rng(seed)
    for k, policy in enumerate(policies):
        unc = uncertain[:, k]
        if policy in ("ignore", "multiclass"):
            labels[unc, k] = np.nan
        elif policy == "zeros":
            labels[unc, k] = 0.0
        elif policy == "ones":
            labels[unc, k] = 1.0
        else:
            lo, hi = lsr_ranges[policy]
            labels[unc, k] = rng.uniform(lo, hi, size=len(labels))[unc]
    return labels.astype(np.float32), uncertain


def _numeric_labels(raw: pd.DataFrame, names: list[str], csv_path: Path) -> np.ndarray:
    """Observation columns as float32 (N, K) with values in {1, 0, -1, NaN}; anything else -> DataError."""
    cols = raw[names]
    if not all(pd.api.types.is_numeric_dtype(cols[c]) for c in names):
        cols = cols.apply(pd.to_numeric, errors="coerce")
    values = cols.to_numpy(dtype=np.float32)  # (N, K)
    bad = ~(np.isnan(values) | np.isin(values, (1.0, 0.0, -1.0)))
    bad |= np.isnan(values) & raw[names].notna().to_numpy()
    if bad.any():
        r, k = np.argwhere(bad)[0]
        value = raw[names[k]].iloc[r]
        value = value.item() if isinstance(value, np.generic) else value
        raise DataError(
            f"{str(csv_path)!r}: {int(bad.sum())} label cells are not 1.0 / 0.0 / -1.0 / blank, e.g. "
            f"{names[k]!r}={value!r} in row {r} ({raw['Path'].iloc[r]}); use the CSV as distributed"
        )
    return values


# Label cells as text (read with dtype=str, keep_default_na=False) -> value; "" is blank (not mentioned).
LABEL_TEXT_VALUES: dict[str, float] = {
    "1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "-1": -1.0, "-1.0": -1.0, "": np.nan,
}


def parse_label_cells(raw: pd.DataFrame, columns: Sequence[str], path: str | Path, key: str = "",
                      row_names: pd.Series | None = None) -> np.ndarray:
    """Label columns read as text -> float32 (N, K) of 1 / 0 / -1 / NaN (blank).

    Accepts 1 / 0 / -1 and 1.0 / 0.0 / -1.0 with surrounding spaces, and blank (also NaN in `raw`).
    Any other value -> DataError naming the file, the column, the row (data row and file line, plus
    `row_names` when given, e.g. the image path) and the value, with the fix (`key`: the option that
    chose the columns).
    """
    out = np.empty((len(raw), len(columns)), dtype=np.float32)  # (N, K)
    for k, column in enumerate(columns):
        cells = raw[column]
        text = cells.astype("object").where(cells.notna(), "").astype(str).str.strip()  # (N,)
        known = text.isin(LABEL_TEXT_VALUES.keys()).to_numpy()
        if not known.all():
            bad = np.flatnonzero(~known)
            r = int(bad[0])
            name = "" if row_names is None else f", {row_names.iloc[r]}"
            where = f"row {r} (line {r + 2} of the file{name})"
            others = sorted(set(text.iloc[bad].tolist()))[:5]
            hint = f"; or leave {column!r} out of {key}" if key else ""
            raise DataError(
                f"{str(path)!r}: column {column!r}, {where}: value {str(cells.iloc[r])!r} is not a label; labels are "
                f"1 / 0 / -1 (uncertain) / blank (also 1.0 / 0.0 / -1.0). {len(bad)} cells of this column are like "
                f"that (values {others}); fix the file{hint}"
            )
        out[:, k] = text.map(LABEL_TEXT_VALUES).to_numpy(dtype=np.float32)
    return out


def read_chexpert(
    csv_path: str | Path,
    pathologies: Sequence[str] = CHEXPERT_PATHOLOGIES,
    uncertainty: str | Mapping[str, str] = "ignore",
    blank: str = "zeros",
    frontal_only: bool = False,
    lsr_zeros: Sequence[float] = (0.0, 0.3),
    lsr_ones: Sequence[float] = (0.55, 0.85),
    seed: int = 0,
) -> LabelTable:
    """Read CheXpert's train.csv / valid.csv into a LabelTable.

    Uncertain (-1.0) cells become: `ignore` NaN, `zeros` 0, `ones` 1, `multiclass` NaN (the model
    learns a 3-way output from `uncertain`), `lsr_zeros` / `lsr_ones` uniform draws from those
    ranges (numpy generator seeded with `seed`: the same arguments give the same values).
    `uncertain` is True wherever the source was -1.0, under every policy. Blank cells are 0
    (`blank="zeros"`) or NaN (`blank="mask"`), except that under `mask` a row whose `No Finding`
    is 1 has its blank cells set to 0 (Support Devices excepted): the labeller's No Finding means
    the other observations are absent. `frame.no_finding` is `No Finding` == 1 whatever the
    selected pathologies. `frame.image_id` and `frame.path` are the CSV's `Path`; `patient_id`
    is parsed from it (`patient00001`).
    """
    csv_path = Path(csv_path).expanduser()
    names = select_pathologies(pathologies, CHEXPERT_PATHOLOGIES, "CheXpert")
    policies = resolve_uncertainty(uncertainty, names)
    ranges = check_label_options(blank, lsr_zeros, lsr_ones)

    raw = read_label_csv(csv_path, [*CHEXPERT_META_COLUMNS, *dict.fromkeys([NO_FINDING, *names])], "CheXpert")
    if frontal_only:
        keep = view_mask(raw["Frontal/Lateral"], ["Frontal"], f"CheXpert label file {str(csv_path)!r}",
                         column="'Frontal/Lateral'", option="data.frontal_only=true ('Frontal/Lateral' = Frontal)")
        raw = raw.loc[keep].reset_index(drop=True)

    paths = raw["Path"].astype(str)
    patient = paths.str.extract(r"(patient\d+)", expand=False)
    if patient.isna().any():
        bad = paths[patient.isna()].head(3).tolist()
        raise DataError(
            f"{str(csv_path)!r}: {int(patient.isna().sum())} paths contain no 'patientNNNNN' folder "
            f"(e.g. {bad}); expected paths like CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
        )

    source = _numeric_labels(raw, names, csv_path)  # (N, K) 1 / 0 / -1 / NaN
    normal = _numeric_labels(raw, [NO_FINDING], csv_path)[:, 0] == 1.0  # (N,) the labeller's No Finding
    labels, uncertain = apply_label_rules(source, names, policies, blank, normal, ranges, seed)  # (N, K) each

    frontal = raw["Frontal/Lateral"].astype(str)
    frame = pd.DataFrame({
        "image_id": paths,
        "patient_id": patient,
        "path": paths,  # relative to the folder holding CheXpert-v1.0-small/ (the datamodule resolves it)
        "view": raw["AP/PA"].astype("object").where(raw["AP/PA"].notna(), frontal).astype(str),
        "age": pd.to_numeric(raw["Age"], errors="coerce").to_numpy(dtype=np.float64),
        "sex": raw["Sex"].astype(str),
        "frontal_lateral": frontal,
        "no_finding": normal,
    })
    log.info(
        "Read %d CheXpert images of %d patients from %s; uncertainty %s, blank=%s, %d uncertain cells",
        len(frame), frame["patient_id"].nunique(), csv_path, dict(zip(names, policies)), blank, int(uncertain.sum()),
    )
    return LabelTable(frame=frame, labels=labels, uncertain=uncertain, pathologies=names)


def chexpert_tasks(tasks: str | Sequence[str]) -> list[str]:
    """data.findings of a dataset labelled by the CheXpert labeller: `competition` (5), `all` (14) or a list of
    names."""
    if isinstance(tasks, str):
        if tasks not in ("competition", "all"):
            raise DataError(f"data.findings={tasks!r}: use 'competition', 'all' or a list of pathology names")
        tasks = CHEXPERT_COMPETITION_TASKS if tasks == "competition" else CHEXPERT_PATHOLOGIES
    return select_pathologies(list(tasks), CHEXPERT_PATHOLOGIES, "data.findings")


class UncertaintyPolicies:
    """What a dataset with uncertain (-1) cells tells the model: one policy per output and which are 3-way.

    For datasets with `uncertainty` (data.uncertainty) and `tasks` (the selected findings, data.findings), e.g.
    CheXpert and MIMIC-CXR (keys: the CheXpert labeller's 14); a labelled folder overrides `uncertainty_keys` with its columns.
    """

    uncertainty: str | dict
    tasks: list[str]

    @property
    def uncertainty_keys(self) -> Sequence[str]:
        """The names data.uncertainty may key."""
        return CHEXPERT_PATHOLOGIES

    @property
    def uncertainty_policies(self) -> list[str]:
        """The uncertainty policy of each selected pathology (data.uncertainty resolved)."""
        return resolve_uncertainty(self.uncertainty, self.tasks, known=self.uncertainty_keys)

    @property
    def multiclass(self) -> list[bool]:
        """True for the selected pathologies whose policy is `multiclass` (3-way output for those only)."""
        return [policy == "multiclass" for policy in self.uncertainty_policies]


def _chexpert_left_out() -> str:
    return (f"nothing with data.findings=all (the 14 columns); the default, data.findings=competition, keeps "
            f"the {len(CHEXPERT_COMPETITION_TASKS)} competition tasks ({_names(CHEXPERT_COMPETITION_TASKS)}). "
            "Uncertain (-1) and blank cells are kept under data.uncertainty / data.blank, not dropped.")


def _names(items: Sequence[str]) -> str:
    return ", ".join(f"`{item}`" for item in items)


@register_dataset("chexpert", findings=CHEXPERT_PATHOLOGIES, left_out=_chexpert_left_out)
class CheXpertData(UncertaintyPolicies, ChestXData):
    """CheXpert as Stanford ships it (`CheXpert-v1.0[-small]/train.csv`, `valid.csv`).

    `valid.csv` (radiologist consensus) is the test split; validation is carved out of
    `train.csv` by patient (`val_fraction`).
    """

    # frame.path is CheXpert-v1.0-small/train/patientN/studyM/viewK.jpg: under the folder holding the dataset folder,
    # else under the dataset folder without its first part
    images = InFolders(lambda data, parent: data._image_folders(parent))

    def __init__(
        self,
        root: str,
        uncertainty: str | dict = "ignore",
        blank: str = "zeros",
        frontal_only: bool = True,
        findings: str | Sequence[str] = "competition",
        lsr_zeros: Sequence[float] = (0.0, 0.3),
        lsr_ones: Sequence[float] = (0.55, 0.85),
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        self.uncertainty = uncertainty if isinstance(uncertainty, str) else dict(uncertainty)
        self.blank = blank
        self.frontal_only = frontal_only
        self.tasks = chexpert_tasks(findings)
        self.lsr_zeros = tuple(lsr_zeros)
        self.lsr_ones = tuple(lsr_ones)
        self._folder: Path | None = None  # the dataset folder, once found (_dataset_dir)

    def _dataset_dir(self) -> Path:
        """The dataset folder (resolved): the first of DATASET_DIRS in data.root holding train.csv; found once."""
        if self._folder is not None:
            return self._folder
        for name in DATASET_DIRS:
            if (self.root / name / "train.csv").exists():
                self._folder = (self.root / name).resolve()
                return self._folder
        raise DataError(
            f"train.csv not found in data.root={str(self.root)!r} or its CheXpert-v1.0[-small]/ folder; "
            "point data.root at the folder that holds CheXpert-v1.0-small/"
        )

    @property
    def label_files(self) -> dict[str, LabelFile]:
        """train.csv (training and validation) and valid.csv (the test split) of the dataset folder."""
        folder = self._dataset_dir()
        return {name: LabelFile((str(folder / f"{name}.csv"),), key=None) for name in ("train", "valid")}

    def _image_folders(self, parent: str) -> list[str]:
        """`<the folder holding the dataset folder>/<parent>`, then `<dataset folder>/<parent without its first part>`
        (text: one call per study folder)."""
        folder = str(self._dataset_dir())
        if not parent:
            return [folder]
        parent = os.path.normpath(parent)  # as pathlib reads it: no `//`, no `./`
        return [f"{os.path.dirname(folder)}/{parent}", os.path.join(folder, parent.partition("/")[2])]

    def load_table(self) -> tuple[LabelTable, np.ndarray]:
        options = dict(
            pathologies=self.tasks, uncertainty=self.uncertainty, blank=self.blank, frontal_only=self.frontal_only,
            lsr_zeros=self.lsr_zeros, lsr_ones=self.lsr_ones, seed=self.seed,
        )
        train = read_chexpert(self.label_file("train"), **options)
        test = read_chexpert(self.label_file("valid"), **options)
        return self.carve_validation(train, test)
