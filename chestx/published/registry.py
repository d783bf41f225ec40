"""The registry of published per-finding AUROC (`results.yaml` beside this module): load, validate, match a run.

The numbers live in the data file, one entry per source, each naming where its numbers were read
(docs/published.md). This module only reads them: it checks every entry (known fields, a chestx dataset, a split
and a protocol from the fixed lists, findings of that dataset's vocabulary, no finding twice, AUROC in [0, 1],
intervals around their value, unique ids) and says which entries a run can be compared with, and what differs.

An entry is *like for like* with a run when the dataset, the split and the labels are the same, the run scores
every finding of the entry, and the protocol is a single model; any other entry on the run's dataset is listed with
the difference named (`differences`), never in the same column.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chestx.data.datasets.vocabulary import DATASET_FINDINGS
from chestx.data.labels.table import canonical_finding

REGISTRY_FILE = Path(__file__).with_name("results.yaml")
SPLITS = ("official", "chexnet", "own", "hidden")
PROTOCOLS = ("single model", "ensemble", "tta", "linear probe")
RUN_PROTOCOL = "single model"  # what a chestx run's predictions.csv is (one model, one pass per image)
REQUIRED = ("id", "source", "citation", "link", "read_from", "table", "dataset", "split", "labels", "protocol",
            "auroc", "mean", "mean_is_mean_of_findings", "interval")
OPTIONAL = ("split_note", "label_file", "chexnet_labels", "trained_on", "model", "protocol_detail", "label_fraction",
            "decimals", "mean_note", "predictions", "note")
SPLIT_WORDS = {"official": "the official split", "chexnet": "the CheXNet list files", "own": "the source's own split",
               "hidden": "a hidden test set"}


class RegistryError(ValueError):
    """The registry file is wrong; the message names the file, the entry, the field and the fix."""


@dataclass(frozen=True)
class Entry:
    """One source's per-finding AUROC, findings under the dataset's own names (e.g. NIH `Pleural_Thickening`)."""

    id: str
    source: str
    citation: str
    link: str
    read_from: str
    table: str
    dataset: str
    split: str
    labels: str
    protocol: str
    auroc: dict[str, float]
    mean: float | None
    mean_is_mean_of_findings: bool
    interval: dict[str, tuple[float, float]] | None
    extra: dict[str, Any] = field(default_factory=dict)  # the OPTIONAL fields present

    @property
    def findings(self) -> list[str]:
        return list(self.auroc)

    @property
    def protocol_text(self) -> str:
        detail = self.extra.get("protocol_detail")
        fraction = self.extra.get("label_fraction")
        text = self.protocol + (f" at {fraction:g} % of the training labels" if fraction is not None else "")
        return text + (f" ({detail})" if detail else "")


def _dataset_name(finding: str, dataset: str) -> str | None:
    """The dataset's own name of a finding the source names in its own words; None when the dataset lacks it."""
    names = {canonical_finding(n): n for n in DATASET_FINDINGS[dataset]}
    return names.get(canonical_finding(finding))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise RegistryError(f"{where}: {value!r} is not a number; write the value as the source gives it (e.g. 0.841)")
    if not 0.0 <= float(value) <= 1.0:
        raise RegistryError(f"{where}: {value} is outside [0, 1]; AUROC is a fraction (0.841, not 84.1)")
    return float(value)


def _entry(raw: Any, index: int, path: Path) -> Entry:
    where = f"{path} entry {index + 1}"
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: an entry is a mapping of fields, got {type(raw).__name__}")
    where = f"{path} entry {raw.get('id', index + 1)!r}"
    missing = [k for k in REQUIRED if k not in raw]
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        raise RegistryError(f"{where}: missing fields {missing}, unknown fields {unknown}; the fields are "
                            f"{', '.join(REQUIRED)} (required) and {', '.join(OPTIONAL)} (optional)")
    dataset, split, protocol = str(raw["dataset"]), str(raw["split"]), str(raw["protocol"])
    if dataset not in DATASET_FINDINGS:
        raise RegistryError(f"{where}: dataset={dataset!r} is not a chestx data config; use one of "
                            f"{', '.join(DATASET_FINDINGS)}")
    if split not in SPLITS:
        raise RegistryError(f"{where}: split={split!r}; use one of {', '.join(SPLITS)}")
    if protocol not in PROTOCOLS:
        raise RegistryError(f"{where}: protocol={protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if (protocol == "linear probe") != (raw.get("label_fraction") is not None):
        raise RegistryError(f"{where}: label_fraction (percent of training labels) goes with protocol=linear probe "
                            "and only with it")
    if not isinstance(raw["auroc"], dict) or not raw["auroc"]:
        raise RegistryError(f"{where}: auroc must map each finding to its value, e.g. {{Edema: 0.89}}")
    auroc: dict[str, float] = {}
    for finding, value in raw["auroc"].items():
        name = _dataset_name(str(finding), dataset)
        if name is None:
            raise RegistryError(f"{where}: finding {finding!r} is not in {dataset}'s vocabulary "
                                f"({', '.join(DATASET_FINDINGS[dataset])}; synonyms: chestx.data.labels.FINDINGS)")
        if name in auroc:
            raise RegistryError(f"{where}: finding {finding!r} is listed twice (as {name!r}); one value per finding")
        auroc[name] = _number(value, f"{where} auroc.{finding}")
    mean = None if raw["mean"] is None else _number(raw["mean"], f"{where} mean")
    if raw["mean_is_mean_of_findings"] not in (True, False):
        raise RegistryError(f"{where}: mean_is_mean_of_findings must be true or false")
    if raw["mean_is_mean_of_findings"] and mean is None:
        raise RegistryError(f"{where}: mean_is_mean_of_findings is true but mean is null")
    interval = None
    if raw["interval"] is not None:
        interval = {}
        for finding, bounds in dict(raw["interval"]).items():
            name = _dataset_name(str(finding), dataset)
            if name not in auroc:
                raise RegistryError(f"{where}: interval of {finding!r}, which has no auroc value")
            low, high = (_number(b, f"{where} interval.{finding}") for b in bounds)
            if not low <= auroc[name] <= high:
                raise RegistryError(f"{where}: interval.{finding} [{low}, {high}] does not hold its value "
                                    f"{auroc[name]}")
            interval[name] = (low, high)
    return Entry(id=str(raw["id"]), source=str(raw["source"]), citation=str(raw["citation"]), link=str(raw["link"]),
                 read_from=str(raw["read_from"]), table=str(raw["table"]), dataset=dataset, split=split,
                 labels=str(raw["labels"]), protocol=protocol, auroc=auroc, mean=mean,
                 mean_is_mean_of_findings=bool(raw["mean_is_mean_of_findings"]), interval=interval,
                 extra={k: raw[k] for k in OPTIONAL if raw.get(k) is not None})


def load_registry(path: str | Path | None = None) -> list[Entry]:
    """Every entry of the registry file (default: the packaged results.yaml), validated."""
    path = Path(path) if path is not None else REGISTRY_FILE
    if not path.is_file():
        raise RegistryError(f"{path}: no such registry file")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("entries"), list):
        raise RegistryError(f"{path}: the file holds `entries:`, a list of entries")
    entries = [_entry(raw, i, path) for i, raw in enumerate(document["entries"])]
    seen: set[str] = set()
    for entry in entries:
        if entry.id in seen:
            raise RegistryError(f"{path}: id {entry.id!r} is used twice; ids are unique")
        seen.add(entry.id)
    return entries


@dataclass(frozen=True)
class RunFacts:
    """What a run folder says about its test set: data config name, split, labels, findings."""

    dataset: str | None
    split: str | None
    findings: list[str]
    chexnet_labels: str | None = None
    label_file: str | None = None      # the label file the config names (None: the dataset's default)


def run_facts(config: dict[str, Any], metrics: dict[str, Any], findings: list[str]) -> RunFacts:
    """RunFacts from a run folder's config.yaml and metrics.json contents and its scored findings."""
    data = config.get("data") or {}
    csv = data.get("csv")
    return RunFacts(dataset=metrics.get("dataset"), split=None if data.get("split") is None else str(data["split"]),
                    findings=list(findings), chexnet_labels=data.get("chexnet_labels"),
                    label_file=None if csv is None else Path(str(csv)).name)


def differences(entry: Entry, run: RunFacts) -> list[str] | None:
    """What differs between the entry and the run, in words ([] = like for like); None when the entry is about
    another dataset or findings the run does not score (nothing to compare)."""
    if entry.dataset != run.dataset or not set(entry.findings) & set(run.findings):
        return None
    out = []
    if entry.split != run.split:
        out.append(f"split: {SPLIT_WORDS[entry.split]} vs the run's data.split={run.split}")
    if entry.split == "chexnet" and run.split == "chexnet":
        wanted = entry.extra.get("chexnet_labels")
        if wanted is not None and wanted != run.chexnet_labels:
            out.append(f"labels: the source scored data.chexnet_labels={wanted} vs the run's {run.chexnet_labels}")
    wanted_file = entry.extra.get("label_file")
    if wanted_file is not None and entry.split == run.split and (run.label_file or "") != wanted_file:
        if not (run.label_file is None and wanted_file == "Data_Entry_2017_v2020.csv"):  # nih's default file
            mine = run.label_file or "default (Data_Entry_2017_v2020.csv)"
            out.append(f"label file: {wanted_file} vs the run's {mine}")
    trained_on = entry.extra.get("trained_on")
    if trained_on in DATASET_FINDINGS and trained_on != entry.dataset:
        out.append(f"training data: trained on {trained_on}, scored on {entry.dataset} (cross-dataset)")
    if entry.protocol != RUN_PROTOCOL:
        out.append(f"protocol: {entry.protocol_text} vs one model, one pass")
    missing = [f for f in entry.findings if f not in run.findings]
    if missing:
        out.append(f"findings: the run does not score {', '.join(missing)}")
    return out
