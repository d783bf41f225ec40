"""test_top_k=true: the checkpoints Lightning's ModelCheckpoint kept (save_top_k=3) of one real tiny run, each tested on
the run's test split into top_k/<checkpoint>/, and their ensemble (chestx.ensemble) as the mean of the three."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate
from PIL import Image
from scipy.special import expit, logit

from chestx.comparison.gains import gains_frame
from chestx.core.run_folder import read_metrics, read_predictions
from chestx.inference.predictor import load_for_inference
from chestx.runs.discover import ReportError, label_runs, load_run
from chestx.runs.ensemble import build_ensemble
from chestx.train import train

TINY_NET = ("model=timm", "model.name=test_resnet", "data.image_size=32", "subgroups=none")


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _by_id(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids, probs, labels, _ = read_predictions(path)
    order = np.argsort(ids["image_id"].to_numpy(dtype=str))
    return ids["image_id"].to_numpy(dtype=str)[order], probs[order], labels[order]


@pytest.fixture(scope="module")
def top_k_run(compose, tiny_overrides, tmp_path_factory) -> tuple[Path, dict, object]:
    """One tiny run, 4 epochs, save_top_k=3, test_top_k=true, tta=hflip: (run folder, metrics.json, its config)."""
    run = tmp_path_factory.mktemp("top_k") / "run"
    cfg = compose([*tiny_overrides, *TINY_NET, "trainer.max_epochs=4", "callbacks.early_stopping=null",
                   "callbacks.model_checkpoint.save_top_k=3", "test_top_k=true", "tta=hflip"], run)
    return run, train(cfg), cfg


@pytest.mark.slow
def test_each_kept_checkpoint_is_a_member_run_folder(top_k_run) -> None:
    run, metrics, cfg = top_k_run
    members = sorted((run / "top_k").iterdir())
    assert len(members) == 3 and metrics["top_k_members"] == [str(m) for m in sorted(
        members, key=lambda m: read_metrics(m / "metrics.json")["top_k_rank"])]
    saved = [read_metrics(m / "metrics.json") for m in members]
    ckpts = [Path(m["checkpoint"]) for m in saved]
    # the member folders are named after the checkpoints Lightning kept (one of the 4 epochs was dropped)
    assert [m.name for m in members] == [c.stem for c in ckpts]
    assert sorted(p.name for p in (run / "checkpoints").glob("epoch*.ckpt")) == sorted(c.name for c in ckpts)
    assert len({_sha256(c) for c in ckpts}) == 3, "three different checkpoints"
    assert len({m["epoch"] for m in saved}) == 3 and all(0 <= m["epoch"] <= 3 for m in saved)
    for m in saved:
        assert m["status"] == "ok" and m["model"] == "test_resnet" and m["seed"] == cfg.seed
        assert m["monitor"] == "val/auroc_mean" and m["monitor_mode"] == "max" and m["top_k_of"] == str(run)
        assert m["params"] == metrics["params"] and m["n_test"] == metrics["n_test"] and m["tta"] == "hflip"
    ranked = sorted(saved, key=lambda m: m["top_k_rank"])
    assert [m["top_k_rank"] for m in ranked] == [1, 2, 3]
    scores = [m["monitor_score"] for m in ranked]
    assert scores == sorted(scores, reverse=True), "rank 1 has the highest validation AUROC"
    # best.ckpt is a copy of the best kept checkpoint, and the run's own test is that checkpoint's
    assert metrics["best_checkpoint"] == str(run / "checkpoints" / "best.ckpt")
    assert _sha256(run / "checkpoints" / "best.ckpt") == _sha256(Path(ranked[0]["checkpoint"]))
    assert metrics["best_epoch"] == ranked[0]["epoch"]
    best_member = run / "top_k" / Path(ranked[0]["checkpoint"]).stem
    assert (best_member / "predictions.csv").read_bytes() == (run / "predictions.csv").read_bytes()
    assert (best_member / "predictions_tta.csv").read_bytes() == (run / "predictions_tta.csv").read_bytes()


@pytest.mark.slow
def test_member_predictions_are_their_checkpoints_forward_pass(top_k_run) -> None:
    """Each member's probabilities against the checkpoint loaded with chestx.core.checkpoint_io (weights only) and
    run over the test images read here with PIL, outside Lightning."""
    run, metrics, cfg = top_k_run
    data = instantiate(cfg.data)
    data.prepare()
    paths = data.image_paths("test")
    ids = sorted(paths)
    images = [np.asarray(Image.open(paths[i]).convert("L")) for i in ids]
    passes = []
    for member in sorted((run / "top_k").iterdir()):
        predictor = load_for_inference(Path(read_metrics(member / "metrics.json")["checkpoint"]))
        want = predictor.probabilities(predictor.preprocess(images))  # (N, K)
        got_ids, got, _ = _by_id(member / "predictions.csv")
        assert list(got_ids) == ids
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # written with 9 digits
        # tta=hflip: the mean of the image's and its mirror's probabilities, the mirror made here with NumPy
        mirrored = predictor.probabilities(predictor.preprocess([np.ascontiguousarray(i[:, ::-1]) for i in images]))
        tta_ids, tta, _ = _by_id(member / "predictions_tta.csv")
        assert list(tta_ids) == ids
        np.testing.assert_allclose(tta, (want + mirrored) / 2, rtol=0, atol=1e-5)
        assert not np.allclose(tta, got, atol=1e-4), "the TTA pass is not the plain pass"
        passes.append(got)
    assert not np.allclose(passes[0], passes[1]) and not np.allclose(passes[1], passes[2])


@pytest.mark.slow
@pytest.mark.parametrize("combine", ["prob", "logit"])
def test_top_k_ensemble_is_the_mean_of_the_three(top_k_run, tmp_path: Path, combine: str) -> None:
    run, _, _ = top_k_run
    out = tmp_path / combine
    metrics = build_ensemble([run / "top_k"], out, combine=combine)
    members = sorted((run / "top_k").iterdir())
    assert metrics["n_members"] == 3 and metrics["model"] == f"ensemble top-3 checkpoints test_resnet ({combine})"
    stack = np.stack([_by_id(m / "predictions.csv")[1] for m in members])  # (3, N, K)
    want = stack.mean(0) if combine == "prob" else expit(logit(np.clip(stack, 1e-7, 1 - 1e-7)).mean(0))
    ids, probs, labels = _by_id(out / "predictions.csv")
    np.testing.assert_allclose(probs, want, rtol=0, atol=1e-8)
    np.testing.assert_array_equal(labels, _by_id(members[0] / "predictions.csv")[2])
    # the members' TTA passes are combined the same way into the ensemble's own predictions_tta.csv
    stack = np.stack([_by_id(m / "predictions_tta.csv")[1] for m in members])  # (3, N, K)
    want = stack.mean(0) if combine == "prob" else expit(logit(np.clip(stack, 1e-7, 1 - 1e-7)).mean(0))
    np.testing.assert_allclose(_by_id(out / "predictions_tta.csv")[1], want, rtol=0, atol=1e-8)
    assert metrics["tta"] == "hflip" and metrics["tta_views"] == 2 and "test_tta/auroc_mean" in metrics
    rows = pd.read_csv(out / "members.csv")
    ckpts = [read_metrics(m / "metrics.json")["checkpoint"] for m in members]
    assert list(rows["checkpoint"]) == ckpts, "each member's own checkpoint, not the run's best.ckpt"
    assert list(rows["checkpoint_sha256"]) == [_sha256(Path(c)) for c in ckpts]
    assert rows["checkpoint_sha256"].nunique() == 3
    # the report's "gain over best member": the member with the highest mean test AUROC, read from its own folder
    ensemble = load_run(out)
    gains, notes = gains_frame([ensemble])
    assert not notes
    mean = gains[gains["pathology"] == "mean"].iloc[0]
    aurocs = {m.name: read_metrics(m / "metrics.json")["test/auroc_mean"] for m in members}
    best = max(aurocs, key=aurocs.get)
    assert mean["baseline"] == f"best member {best}" and mean["kind"] == "ensemble of 3"
    assert mean["auc_baseline"] == pytest.approx(aurocs[best], abs=1e-6)
    assert mean["auc"] == pytest.approx(metrics["test/auroc_mean"], abs=1e-6)
    # beside their ensemble in a report, the members are columns of their own, not replicates of one setting
    runs = [*(load_run(m) for m in members), ensemble]
    label_runs(runs)
    assert [r.label for r in runs] == [*(f"test_resnet checkpoint={m.name}" for m in members),
                                       f"ensemble top-3 checkpoints test_resnet ({combine}) checkpoint=top-3"]


@pytest.mark.slow
def test_one_kept_checkpoint_says_raise_save_top_k(compose, tiny_overrides, tmp_path: Path, caplog) -> None:
    run = tmp_path / "one"
    with caplog.at_level(logging.WARNING, logger="chestx.train"):
        train(compose([*tiny_overrides, *TINY_NET, "test_top_k=true"], run))  # save_top_k=1, the default
    assert "the run kept 1 checkpoint (callbacks.model_checkpoint.save_top_k=1)" in caplog.text
    assert "raise callbacks.model_checkpoint.save_top_k" in caplog.text
    assert len(list((run / "top_k").iterdir())) == 1
    with pytest.raises(ReportError, match=r"holds 1 finished run: an ensemble needs 2 or more \(the run .* kept 1 "
                                          r"checkpoint .*raise callbacks\.model_checkpoint\.save_top_k"):
        build_ensemble([run / "top_k"], tmp_path / "ens")
    with pytest.raises(ReportError, match=r"its top-k checkpoints are members with runs=\[.*top_k\]"):
        build_ensemble([run], tmp_path / "ens")


def test_save_top_k_under_one_file_name_is_refused_without_the_key(compose, tiny_overrides, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"callbacks\.model_checkpoint\.save_top_k=3 keeps 3 checkpoints under the "
                                         r"one name 'best'.*add test_top_k=true"):
        train(compose([*tiny_overrides, "callbacks.model_checkpoint.save_top_k=3"], tmp_path / "run"))
