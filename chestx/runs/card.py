"""model_card.md of a run folder, rendered from the folder's own files only (and the packaged published registry).

Sections follow "Model Cards for Model Reporting" (Mitchell et al. 2019: model details, intended use, factors,
metrics, evaluation / training data, quantitative analyses, ethical considerations, caveats and recommendations),
under the headings of Hugging Face's model card layout (YAML metadata, Model Details, Uses, Bias, Risks and
Limitations, Training Details, Evaluation, Environmental Impact / Technical Specifications). Every number is written
as the file it comes from writes it (CSV cells as text, metrics.json values as JSON), so a test can find each one in
its file. A file the folder lacks is named in the card, never filled in.

    python -m chestx.card run=outputs/train/2026-12-07/10-00-00     # (re)write <run>/model_card.md
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from chestx.core.run_folder import (
    AUROC_FILE, CALIBRATION_FILE, CONFIG_FILE, DATA_FILES_FILE, HYDRA_DIR, METRICS_FILE, MODEL_CARD_FILE,
    OVERRIDES_FILE, SPLIT_FILE, SUBGROUPS_FILE, THRESHOLDS_FILE, read_run_config, select,
)
from chestx.published.registry import differences, load_registry, run_facts

log = logging.getLogger(__name__)

LIMITATIONS = {
    "nih": "NIH ChestX-ray14's labels were text-mined from radiology reports by NLP (Wang et al. 2017), not read "
           "from the images; expert re-reads disagree with a share of them (e.g. Google's re-adjudication, "
           "data=nih_expert). The images come from one hospital (NIH Clinical Center, USA), many patients with "
           "several follow-up images.",
    "chexpert": "CheXpert's training labels come from an automatic report labeller with uncertain (-1) mentions; "
                "only the small validation set was labelled by radiologists. One hospital (Stanford, USA), "
                "inpatient and outpatient.",
    "mimic_cxr": "MIMIC-CXR's labels come from report labellers (CheXpert / NegBio); one hospital's emergency "
                 "department (Beth Israel Deaconess, Boston, USA).",
}
GENERIC_LIMITATION = ("The labels of this dataset may come from reports rather than the images; check the dataset's "
                      "paper for its label noise and its population (docs/datasets/).")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file (hashlib.file_digest reads it in blocks)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def label_files(data: Any) -> list[Path]:
    """The label file(s) a ChestXData reads as configured, asked of the dataset itself (`ChestXData.label_paths`: the
    files its class declares in `label_files`, `data.csv` and the like applied), in its order, each once; [] when it
    declares none (the card says so)."""
    found: list[Path] = []
    for path in data.label_paths().values():
        if path not in found:
            found.append(path)
    return found


def write_data_files(run_dir: Path, data: Any) -> None:
    """<run>/data_files.csv: role, name, bytes, sha256 of the label file(s) and of split.csv (at training time, so
    the card can state them from the folder alone)."""
    rows = [("label_file", p.name, p.stat().st_size, sha256(p)) for p in label_files(data)]
    split = Path(run_dir) / SPLIT_FILE
    if split.is_file():
        rows.append(("split", split.name, split.stat().st_size, sha256(split)))
    with open(Path(run_dir) / DATA_FILES_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["role", "name", "bytes", "sha256"])
        writer.writerows(rows)


def _rows(path: Path) -> list[dict[str, str]] | None:
    """A CSV's rows as text, exactly as written; None when the folder lacks the file."""
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _j(value: Any) -> str:
    """A metrics.json value as the file writes it."""
    return "not recorded" if value is None else value if isinstance(value, str) else json.dumps(value)


def _c(config: dict, key: str) -> str:
    """A config.yaml value as JSON ('not in config.yaml' when the folder's config lacks it: an evaluate or ensemble
    folder has no training recipe)."""
    value = select(config, key)
    return "not in config.yaml" if value is None else value if isinstance(value, str) else json.dumps(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *["| " + " | ".join(r) + " |" for r in rows], ""]


def _command(run_dir: Path, config: dict) -> str:
    path = run_dir / HYDRA_DIR / OVERRIDES_FILE
    if path.is_file():
        overrides = [str(o) for o in (yaml.safe_load(path.read_text()) or [])]
        return f"python -m chestx.{config.get('task_name') or 'train'} " + " ".join(overrides)
    return ("not recorded: this folder has no .hydra/overrides.yaml (the run was composed in code, e.g. by a test); "
            "its resolved configuration is config.yaml")


def _metadata(config: dict, metrics: dict, auroc: list[dict[str, str]] | None) -> list[str]:
    mean = next((r["auroc"] for r in auroc or [] if r["pathology"] == "mean"), None)
    meta = {"library_name": "chestx", "tags": ["chest-x-ray", "multi-label-classification", "medical-imaging"],
            "datasets": [str(metrics.get("dataset") or select(config, "data._target_"))],
            "metrics": ["roc_auc"], "model_name": str(metrics.get("model") or select(config, "model.name")),
            "test_auroc_mean": mean}
    return ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", ""]


def _data_section(run_dir: Path, config: dict, metrics: dict) -> list[str]:
    files = _rows(run_dir / DATA_FILES_FILE)
    out = ["## Training Details and Evaluation Data (Mitchell et al.: Training Data, Evaluation Data)", "",
           f"- Dataset: `{_j(metrics.get('dataset'))}` (`{_j(metrics.get('data'))}`), split `data.split="
           f"{select(config, 'data.split')}`" + (f", CheXNet labels `{select(config, 'data.chexnet_labels')}`"
                                                  if select(config, "data.split") == "chexnet" else "") + ".",
           f"- Images: train {_j(metrics.get('n_train'))}, validation {_j(metrics.get('n_val'))}, "
           f"test {_j(metrics.get('n_test'))} (metrics.json).", ""]
    if files is None:
        out += [f"Digests: not recorded ({DATA_FILES_FILE} is absent: the run predates it).", ""]
    else:
        out += [f"Digests ({DATA_FILES_FILE}):", ""]
        out += _table(["role", "file", "bytes", "sha256"],
                      [[r["role"], f"`{r['name']}`", r["bytes"], f"`{r['sha256']}`"] for r in files])
        if not any(r["role"] == "label_file" for r in files):
            out += ["The label file of this dataset class is not known to the card step: no digest.", ""]
    return out


def _label_policy(config: dict) -> list[str]:
    data = config.get("data") or {}
    keys = [k for k in ("uncertainty", "blank", "frontal_only", "tasks", "findings", "chexnet_labels",
                        "include_no_finding", "views", "no_finding_fraction") if k in data]
    lines = ["## Label policy", "", "Labels are 1 / 0 / unknown; unknown and uncertain cells are masked in the loss "
             "and never used as ground truth in metrics. The run's label options (config.yaml):", ""]
    lines += [f"- `data.{k}`: `{json.dumps(data[k])}`" for k in keys] or ["- none beyond the dataset's defaults"]
    return [*lines, ""]


def _metrics_section(run_dir: Path) -> list[str]:
    auroc = _rows(run_dir / AUROC_FILE)
    subgroups = _rows(run_dir / SUBGROUPS_FILE)
    intervals = {r["pathology"]: (r["auroc_low"], r["auroc_high"]) for r in subgroups or [] if r["attribute"] == "all"}
    out = ["## Evaluation (Mitchell et al.: Metrics, Quantitative Analyses)", ""]
    if auroc is None:
        return [*out, f"No {AUROC_FILE} in this folder: the run was not tested.", ""]
    out += [f"Test AUROC per finding ({AUROC_FILE}); 95 % patient-bootstrap interval from the `all` rows of "
            f"{SUBGROUPS_FILE}" + ("" if subgroups is not None else " (absent: no interval)") + ".", ""]
    rows = [[r["pathology"], r["auroc"], *intervals.get(r["pathology"], ("", "")), r["n_pos"], r["n_neg"]]
            for r in auroc]
    out += _table(["finding", "AUROC", "95 % low", "95 % high", "positives", "negatives"], rows)
    thresholds = _rows(run_dir / THRESHOLDS_FILE)
    calibration = _rows(run_dir / CALIBRATION_FILE)
    out += ["### Calibration and frozen thresholds", ""]
    if thresholds is None or calibration is None:
        out += [f"Not computed ({THRESHOLDS_FILE} / {CALIBRATION_FILE} absent: clinical=none).", ""]
    else:
        ece = {r["pathology"]: r for r in calibration}
        out += [f"Thresholds frozen on the validation split ({THRESHOLDS_FILE}); expected calibration error on the "
                f"test split, raw and after temperature scaling ({CALIBRATION_FILE}).", ""]
        out += _table(["finding", "threshold", "method", "ECE", "ECE (temperature scaled)"],
                      [[r["pathology"], r["threshold"], r["method"], ece.get(r["pathology"], {}).get("ece", ""),
                        ece.get(r["pathology"], {}).get("ece_temperature_scaled", "")] for r in thresholds])
    out += ["### Subgroup gaps (Mitchell et al.: Factors)", ""]
    if subgroups is None:
        out += [f"Not computed ({SUBGROUPS_FILE} absent: subgroups=none).", ""]
    else:
        widest: dict[tuple[str, str], dict[str, str]] = {}
        for r in subgroups:
            if r["attribute"] == "all" or not r["auroc_gap"]:
                continue
            key = (r["attribute"], r["pathology"])
            if key not in widest or abs(float(r["auroc_gap"])) > abs(float(widest[key]["auroc_gap"])):
                widest[key] = r
        out += [f"Per attribute and finding, the group with the widest AUROC gap to all test images ({SUBGROUPS_FILE}; "
                "every group is in the file).", ""]
        out += _table(["attribute", "finding", "group", "images", "AUROC", "AUROC gap", "FNR gap"],
                      [[a, p, r["group"], r["n_images"], r["auroc"], r["auroc_gap"], r["fnr_gap"]]
                       for (a, p), r in widest.items()])
    return out


def _cost_section(metrics: dict) -> list[str]:
    machine = metrics.get("machine") or {}
    return ["## Environmental Impact and Technical Specifications (cost and hardware)", "",
            f"- Parameters {_j(metrics.get('params'))}, MACs per image {_j(metrics.get('macs'))}, "
            f"image size {_j(metrics.get('image_size'))} px.",
            f"- Wall time {_j(metrics.get('wall_time_s'))} s, epochs {_j(metrics.get('epochs'))} "
            f"(best epoch {_j(metrics.get('best_epoch'))}), training {_j(metrics.get('train_images_per_s'))} "
            f"images/s, inference {_j(metrics.get('infer_images_per_s'))} images/s, peak memory "
            f"{_j(metrics.get('peak_memory_mb'))} MB.",
            f"- Machine: CPU {_j(machine.get('cpu'))}, {_j(machine.get('cores'))} cores, GPU "
            f"{_j(machine.get('gpu')) if machine.get('gpu') else 'none'}, torch {_j(machine.get('torch'))}, "
            f"Python {_j(machine.get('python'))} "
            "(metrics.json `machine`).", ""]


def _published_section(config: dict, metrics: dict, auroc: list[dict[str, str]] | None) -> list[str]:
    findings = [r["pathology"] for r in auroc or [] if r["pathology"] != "mean"]
    facts = run_facts(config, metrics, findings)
    out = ["## Comparable published results", "", "From chestx/published/results.yaml (docs/published.md).", ""]
    like, other = [], []
    for entry in load_registry():
        diff = differences(entry, facts)
        if diff is not None:
            (other if diff else like).append((entry, diff))
    if not like and not other:
        return [*out, f"No published entry on `{facts.dataset}` for these findings.", ""]
    for entry, _ in like:
        mine = {r["pathology"]: r["auroc"] for r in auroc or []}
        out += [f"Like for like: [{entry.source}]({entry.link}) (`{entry.id}`; read from {entry.read_from}).", ""]
        out += _table(["finding", "this run", "published"],
                      [[f, mine.get(f, ""), repr(v)] for f, v in entry.auroc.items()])
    if other:
        out += ["Listed apart, with what differs:", ""]
        out += [f"- [{entry.source}]({entry.link}) (`{entry.id}`): {'; '.join(diff)}." for entry, diff in other]
        out.append("")
    return out


def render_card(run_dir: str | Path) -> str:
    """The card's Markdown text from the run folder's files."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    metrics = json.loads((run_dir / METRICS_FILE).read_text()) if (run_dir / METRICS_FILE).is_file() else {}
    auroc = _rows(run_dir / AUROC_FILE)
    model = str(metrics.get("model") or select(config, "model.name"))
    dataset = str(metrics.get("dataset") or "")
    lines = [*_metadata(config, metrics, auroc), f"# Model card: {model} on {dataset}", "",
             f"Run folder `{run_dir.name}`; every value below is read from the file named beside it.", "",
             "## Model Details (Mitchell et al.: Model Details)", "",
             f"- Model: `{model}` (`{_c(config, 'model._target_')}`), pretrained `{_c(config, 'model.pretrained')}`; "
             f"status `{_j(metrics.get('status'))}`.",
             f"- Recipe (config.yaml): optimizer `{_c(config, 'optimizer._target_')}`, lr "
             f"`{_c(config, 'optimizer.lr')}`, loss `{_c(config, 'loss._target_')}`, batch "
             f"`{_c(config, 'loader.batch_size')}`, max epochs `{_c(config, 'trainer.max_epochs')}`, seed "
             f"`{_c(config, 'seed')}`.",
             f"- Command that reproduces it: `{_command(run_dir, config)}`", "",
             "## Uses (Mitchell et al.: Intended Use)", "",
             "- Intended: research and benchmarking of chest X-ray multi-label classifiers.",
             "- **Not a medical device.** Not for diagnosis, triage or any clinical decision; not validated "
             "prospectively or on any population beyond its test split.", "",
             *_data_section(run_dir, config, metrics), *_label_policy(config), *_metrics_section(run_dir),
             *_cost_section(metrics), *_published_section(config, metrics, auroc),
             "## Bias, Risks, and Limitations (Mitchell et al.: Ethical Considerations, Caveats and Recommendations)",
             "", f"- {LIMITATIONS.get(dataset.replace('_sample', ''), GENERIC_LIMITATION)}",
             "- AUROC ranks images; it says nothing about a threshold's use on another population. The subgroup "
             "gaps above are measured on this test split only.",
             "- Not a medical device (as above).", ""]
    return "\n".join(lines)


def write_card(run_dir: str | Path) -> Path:
    """Write <run>/model_card.md; returns its path."""
    path = Path(run_dir) / MODEL_CARD_FILE
    path.write_text(render_card(run_dir), encoding="utf-8")
    log.info("Model card: %s", path)
    return path
