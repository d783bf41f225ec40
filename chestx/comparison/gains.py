"""The report's "Ensembles and test-time augmentation" sections: what each one gains, and what it costs.

- An ensemble run folder (`chestx.ensemble`, members.csv) is compared with its best member (highest mean test AUROC on
  the ensemble's own test images, read from the member's predictions.csv); a run with a TTA pass (predictions_tta.csv,
  `tta=hflip|tencrop`) is compared with its own plain pass. Both are paired DeLong tests on the same test images,
  per pathology, Holm-corrected over the pathologies (`chestx.metrics.delong.paired_tests`).
  Files: gains.csv (one row per comparison and pathology, and a `mean` row with the mean AUROCs and their gain).
- Their cost: forward passes per image (members x views), parameters and GMACs summed over the members and crops,
  and test images/s (TTA: the pass measured in the run; ensemble: the members' measured rates run one after the
  other, 1 / sum(1 / rate)). File: tta_ensemble_costs.csv.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from chestx.comparison.compare import MEAN
from chestx.comparison.tables import ALPHA, Cell, Section, Table, fmt, is_missing, significant
from chestx.core.run_folder import MEMBERS_FILE, PREDICTIONS_FILE, PREDICTIONS_TTA_FILE, read_predictions
from chestx.metrics.auroc import auroc_vector
from chestx.metrics.delong import paired_tests
from chestx.runs.discover import Run

log = logging.getLogger(__name__)

GAINS_CSV = "gains.csv"
COSTS_CSV = "tta_ensemble_costs.csv"
GAIN_COLUMNS = ("label", "replicate", "run", "kind", "baseline", "baseline_path", "pathology", "auc", "auc_baseline",
                "gain", "p_value", "p_holm")


def _sorted(ids: pd.DataFrame, probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(ids["image_id"].to_numpy(dtype=str), kind="stable")
    return ids["image_id"].to_numpy(dtype=str)[order], probs[order], labels[order]


def _rows(run: Run, kind: str, baseline: str, baseline_path: str, probs: np.ndarray, base: np.ndarray,
          labels: np.ndarray, pathologies: list[str]) -> list[dict]:
    """Paired DeLong per pathology of `probs` (N, K) against `base` (N, K), then the mean row."""
    tests = paired_tests(np.stack([probs, base]), labels, reference=1, pathologies=pathologies)
    common = {"label": run.label, "replicate": run.replicate, "run": str(run.path), "kind": kind,
              "baseline": baseline, "baseline_path": baseline_path}
    rows = [{**common, "pathology": t.pathology, "auc": t.auc, "auc_baseline": t.auc_reference, "gain": t.diff,
             "p_value": t.p_value, "p_holm": t.p_holm} for t in tests.itertuples()]
    auc, auc_base = np.nanmean(tests["auc"]), np.nanmean(tests["auc_reference"])
    rows.append({**common, "pathology": MEAN, "auc": auc, "auc_baseline": auc_base, "gain": auc - auc_base,
                 "p_value": np.nan, "p_holm": np.nan})
    return rows


def _ensemble_rows(run: Run) -> tuple[list[dict], str | None]:
    """The ensemble against its best member on its own test images; or a note why not."""
    members = pd.read_csv(run.path / MEMBERS_FILE)
    ids, probs, labels = _sorted(run.ids, run.probs, run.labels)
    best, best_auc, best_probs = None, -np.inf, None
    for path in members["run"].astype(str):
        file = Path(path) / PREDICTIONS_FILE
        if not file.is_file():
            return [], f"`{run.label}`: member {path} has no {PREDICTIONS_FILE} any more, no gain computed"
        m_ids, m_probs, _, names = read_predictions(file)
        m_ids, m_probs, _ = _sorted(m_ids, m_probs, m_probs)
        if names != run.pathologies or not np.array_equal(m_ids, ids):
            return [], f"`{run.label}`: member {path} was not tested on the ensemble's images, no gain computed"
        mean = float(np.nanmean(auroc_vector(m_probs, labels)))
        if mean > best_auc:
            best, best_auc, best_probs = path, mean, m_probs
    assert best is not None and best_probs is not None
    return _rows(run, f"ensemble of {len(members)}", f"best member {Path(best).name}", best, probs, best_probs,
                 labels, run.pathologies), None


def _tta_rows(run: Run) -> list[dict]:
    """The run's TTA pass against its plain pass (the same checkpoint, the same test images)."""
    t_ids, t_probs, t_labels, names = read_predictions(run.path / PREDICTIONS_TTA_FILE)
    ids, probs, labels = _sorted(run.ids, run.probs, run.labels)
    t_ids, t_probs, t_labels = _sorted(t_ids, t_probs, t_labels)
    if names != run.pathologies or not np.array_equal(ids, t_ids):
        log.warning("%s: %s is not of the test images of predictions.csv: left out", run.path, PREDICTIONS_TTA_FILE)
        return []
    mode = run.metrics.get("tta", "?")
    return _rows(run, f"tta={mode}", "plain pass", str(run.path), t_probs, probs, labels, run.pathologies)


def gains_frame(runs: list[Run]) -> tuple[pd.DataFrame, list[str]]:
    """gains.csv of every ensemble and TTA pass among `runs`, and notes on those that could not be compared."""
    rows, notes = [], []
    for run in runs:
        if (run.path / MEMBERS_FILE).is_file():
            more, note = _ensemble_rows(run)
            rows += more
            notes += [note] if note else []
        if (run.path / PREDICTIONS_TTA_FILE).is_file():
            rows += _tta_rows(run)
    return pd.DataFrame(rows, columns=list(GAIN_COLUMNS)), notes


def gains_table(frame: pd.DataFrame) -> Table:
    """One row per comparison: mean AUROC, the baseline's, the gain, and the pathologies it changes (Holm p)."""
    rows = []
    several = frame.groupby("label")["run"].nunique().to_dict()  # a label with several runs: name the replicate
    for (run, kind), block in frame.groupby(["run", "kind"], sort=False):
        mean = block[block["pathology"] == MEAN].iloc[0]
        label = mean["label"] if several[mean["label"]] == 1 else f"{mean['label']} ({mean['replicate']})"
        per = block[block["pathology"] != MEAN]
        up = [r.pathology for r in per.itertuples() if significant(r.p_holm) and r.gain > 0]
        down = [r.pathology for r in per.itertuples() if significant(r.p_holm) and r.gain < 0]
        changed = ", ".join([*(f"+{p}" for p in up), *(f"−{p}" for p in down)]) or "none"
        gain = mean["gain"]
        rows.append([Cell(str(label)), Cell(str(kind)), Cell(str(mean["baseline"])), Cell(fmt(mean["auc"])),
                     Cell(fmt(mean["auc_baseline"])),
                     Cell("n/a" if is_missing(gain) else f"{gain:+.3f}", bold=not is_missing(gain) and gain > 0),
                     Cell(changed)])
    return Table(["run", "what", "compared with", "mean AUROC", "baseline mean AUROC", "gain", f"Holm p < {ALPHA}"],
                 rows)


def gains_section(runs: list[Run], out: Path) -> Section:
    heading = "Ensembles and test-time augmentation: gain over the best member / the plain pass"
    frame, notes = gains_frame(runs)
    if frame.empty:
        return Section(heading, ["No ensemble (chestx.ensemble) and no TTA pass (tta=hflip|tencrop) among the runs.",
                                 *notes])
    frame.to_csv(out / GAINS_CSV, index=False, float_format="%.6g")
    notes = ["Each ensemble against its best member (highest mean test AUROC on the ensemble's test images), each "
             "TTA pass against the same checkpoint's plain pass: gain = mean AUROC − baseline's; paired DeLong test "
             f"per pathology on the same test images, Holm-corrected over pathologies (`+`/`−`: Holm p < {ALPHA}, "
             f"up / down). Numbers: {GAINS_CSV}.", *notes]
    return Section(heading, notes, gains_table(frame), GAINS_CSV, files={GAINS_CSV: out / GAINS_CSV},
                   latex_label="tab:gains")


def costs_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per ensemble and per TTA pass: passes per image, params and GMACs summed, test images/s."""
    rows = []
    for run in runs:
        m = run.metrics
        if m.get("ensemble"):
            rows.append({"label": run.label, "replicate": run.replicate,
                         "kind": f"ensemble of {m.get('n_members')}",
                         "passes_per_image": m.get("n_members"), "params": m.get("params"), "macs": m.get("macs"),
                         "test_images_per_s": m.get("infer_images_per_s"),
                         "rate_source": "members' measured rates, one after the other"})
        if m.get("tta") and m.get("tta") != "none":
            views = m.get("tta_views") or 1
            members = int(m.get("n_members") or 1) if m.get("ensemble") else 1  # an ensemble's pass: every member's
            rows.append({"label": run.label, "replicate": run.replicate, "kind": f"tta={m['tta']}",
                         "passes_per_image": views * members,
                         "params": m.get("params"), "macs": None if m.get("macs") is None else m["macs"] * views,
                         "test_images_per_s": m.get("tta_infer_images_per_s"),
                         "rate_source": "members' measured TTA passes, one after the other" if members > 1
                         else "measured TTA pass, image loading included"})
    return pd.DataFrame(rows, columns=["label", "replicate", "kind", "passes_per_image", "params", "macs",
                                       "test_images_per_s", "rate_source"])


def costs_section(runs: list[Run], out: Path) -> Section:
    heading = "Cost of ensembles and TTA passes"
    frame = costs_frame(runs)
    if frame.empty:
        return Section(heading, ["No ensemble and no TTA pass among the runs."])
    frame.to_csv(out / COSTS_CSV, index=False)
    several = frame.groupby("label")["replicate"].nunique().to_dict()
    rows = [[Cell(str(r["label"]) if several[r["label"]] == 1 else f"{r['label']} ({r['replicate']})"),
             Cell(str(r["kind"])), Cell(str(int(r["passes_per_image"]))),
             Cell("n/a" if is_missing(r["params"]) else f"{r['params'] / 1e6:.2f}"),
             Cell("n/a" if is_missing(r["macs"]) else f"{r['macs'] / 1e9:.2f}"),
             Cell("n/a" if is_missing(r["test_images_per_s"]) else f"{r['test_images_per_s']:.1f}"),
             Cell(str(r["rate_source"]))] for r in frame.to_dict("records")]
    notes = ["Per test image: forward passes (members × views), parameters (M, summed over the members; TTA reuses "
             "one network) and GMACs at the input size summed over members and crops (ten-crop: 10 × one pass). "
             "Images/s come from the machine each run was measured on (its metrics.json `machine`). Numbers: "
             f"{COSTS_CSV}."]
    table = Table(["run", "what", "passes/image", "params (M)", "GMACs", "test img/s", "img/s from"], rows)
    return Section(heading, notes, table, COSTS_CSV, files={COSTS_CSV: out / COSTS_CSV}, latex_label="tab:tta_cost")
