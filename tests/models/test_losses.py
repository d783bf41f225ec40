"""Masked losses against independently computed torch references and hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chestx.models.losses import (
    MaskedBCELoss,
    MaskedFocalLoss,
    MixedPolicyLoss,
    MulticlassUncertaintyLoss,
    OutputLayout,
    WeightedBCELoss,
    class_weights_from_labels,
    multiclass_classes,
    multiclass_positive_probability,
    probabilities,
    weighted_bce,
)

NAN = float("nan")


@pytest.fixture()
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, generator=g)
    target = torch.tensor(
        [[1, 0, NAN, 1, 0], [NAN, NAN, 1, 0, 0], [0, 1, 1, NAN, 1], [0, 0, 0, 0, NAN]], dtype=torch.float32
    )
    return logits, target


def test_masked_bce_equals_bce_on_observed_cells(batch):
    logits, target = batch
    mask = ~torch.isnan(target)
    expected = F.binary_cross_entropy_with_logits(logits[mask], target[mask])
    got = MaskedBCELoss()(logits, target, torch.zeros_like(mask))
    torch.testing.assert_close(got, expected)


def test_masked_bce_soft_targets(batch):
    logits, target = batch
    soft = torch.where(target == 1, torch.full_like(target, 0.7), target)
    mask = ~torch.isnan(soft)
    expected = F.binary_cross_entropy_with_logits(logits[mask], soft[mask])
    torch.testing.assert_close(MaskedBCELoss()(logits, soft, None), expected)


@pytest.mark.parametrize(
    "loss", [MaskedBCELoss(), WeightedBCELoss([0.3] * 5, [0.7] * 5), MaskedFocalLoss(2.0, 0.25)], ids=str
)
def test_nan_cells_get_zero_gradient(batch, loss):
    logits, target = batch
    logits = logits.clone().requires_grad_(True)
    loss(logits, target, None).backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[torch.isnan(target)] == 0).all()
    assert (logits.grad[~torch.isnan(target)] != 0).all()


@pytest.mark.parametrize("loss", [MaskedBCELoss(), MaskedFocalLoss(), MulticlassUncertaintyLoss()], ids=str)
def test_all_nan_batch_is_zero_with_grad_fn(loss):
    k = 3
    width = 3 * k if isinstance(loss, MulticlassUncertaintyLoss) else k
    logits = torch.randn(2, width, requires_grad=True)
    target = torch.full((2, k), NAN)
    out = loss(logits, target, torch.zeros(2, k, dtype=torch.bool))
    assert out.item() == 0.0 and out.grad_fn is not None
    out.backward()
    assert (logits.grad == 0).all()


def test_class_weights_chexnet_form():
    labels = np.array([[1, 0, 0], [0, 0, NAN], [NAN, 0, 1], [0, 0, 1]], dtype=np.float32)
    pos, neg = class_weights_from_labels(labels)
    # class 0: 1 pos, 2 neg of 3 observed; class 1: no positive -> balanced; class 2: 2 pos, 1 neg
    np.testing.assert_allclose(pos, [2 / 3, 0.5, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(neg, [1 / 3, 0.5, 2 / 3], rtol=1e-6)
    assert pos.dtype == np.float32 and np.isfinite(pos).all() and np.isfinite(neg).all()


def test_weighted_bce_hand_computed():
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.5]])
    target = torch.tensor([[1.0, 0.0], [NAN, 1.0]])
    loss = weighted_bce(np.array([[1, 0], [0, 1], [0, 0], [0, 0]], dtype=np.float32))  # pos 1/4 per class
    assert isinstance(loss, WeightedBCELoss)
    wp, wn = 3 / 4, 1 / 4
    cells = [
        wp * -math.log(1 / (1 + math.exp(-0.0))),  # y=1, z=0
        wn * -math.log(1 - 1 / (1 + math.exp(-2.0))),  # y=0, z=2
        wp * -math.log(1 / (1 + math.exp(-0.5))),  # y=1, z=0.5
    ]
    assert loss(logits, target, None).item() == pytest.approx(sum(cells) / 3, rel=1e-5)


def test_focal_gamma0_equals_bce(batch):
    logits, target = batch
    torch.testing.assert_close(MaskedFocalLoss(gamma=0.0)(logits, target, None), MaskedBCELoss()(logits, target, None))


def test_focal_hand_computed():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = 0.5, 0.75
    target = torch.tensor([[1.0, 0.0]])
    cell0 = 0.25 * math.log(2.0)  # (1 - 0.5)^2 * -log 0.5
    cell1 = 0.75**2 * math.log(4.0)  # p_t = 0.25
    assert MaskedFocalLoss(2.0)(logits, target, None).item() == pytest.approx((cell0 + cell1) / 2, rel=1e-5)
    assert MaskedFocalLoss(2.0, alpha=0.25)(logits, target, None).item() == pytest.approx(
        (0.25 * cell0 + 0.75 * cell1) / 2, rel=1e-5
    )


def test_multiclass_loss_matches_cross_entropy_ignore_index():
    g = torch.Generator().manual_seed(1)
    b, k = 4, 3
    logits = torch.randn(b, 3 * k, generator=g)
    target = torch.tensor([[1, 0, NAN], [NAN, 1, 0], [0, NAN, 1], [NAN, NAN, NAN]], dtype=torch.float32)
    uncertain = torch.tensor([[0, 0, 1], [0, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.bool)
    cls = torch.tensor([[1, 0, 2], [-100, 1, 0], [0, 2, 1], [2, -100, -100]])
    expected = F.cross_entropy(logits.reshape(b, k, 3).permute(0, 2, 1), cls, ignore_index=-100)
    torch.testing.assert_close(MulticlassUncertaintyLoss()(logits, target, uncertain), expected)
    with pytest.raises(ValueError, match="3K"):
        MulticlassUncertaintyLoss()(logits[:, :-1], target, uncertain)


def test_multiclass_positive_probability_renormalised():
    logits = torch.tensor([[0.0, math.log(3.0), 5.0, 1.0, 1.0, -9.0]])  # k=0: neg 1, pos 3; k=1: equal
    p = multiclass_positive_probability(logits)
    torch.testing.assert_close(p, torch.tensor([[0.75, 0.5]]))
    torch.testing.assert_close(probabilities(logits, multiclass=True), p)
    z = torch.tensor([[0.0, 2.0]])
    torch.testing.assert_close(probabilities(z, multiclass=False), torch.sigmoid(z))


# ----------------------------------------------------------- per-pathology policies (issue 8 bug 2)
def _mixed_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    flags = [False, True, False, True, True]  # pathologies 1, 3, 4 multiclass
    layout = OutputLayout(flags, len(flags))
    target = torch.randint(0, 2, (6, 5), generator=g).float()
    uncertain = torch.rand(6, 5, generator=g) < 0.3
    target[uncertain & torch.tensor(flags)] = float("nan")  # multiclass: uncertain cells are NaN in the table
    target[0, 0] = float("nan")  # a masked binary cell
    logits = torch.randn(6, layout.num_outputs, generator=g, requires_grad=True)
    return layout, logits, target, uncertain


def test_output_layout_columns():
    layout = OutputLayout([False, True, False, True, True], 5)
    assert layout.num_outputs == 11 and layout.start == [0, 1, 4, 5, 8]
    assert [layout.positive_column(k) for k in range(5)] == [0, 2, 4, 6, 9]
    assert OutputLayout(True, 4).num_outputs == 12 and OutputLayout(False, 4).num_outputs == 4
    with pytest.raises(ValueError, match="3 flags for 4 pathologies"):
        OutputLayout([True, False, True], 4)


def test_mixed_policy_loss_is_the_cell_weighted_mean_of_both_losses():
    """Binary pathologies get the configured loss on their own logit; multiclass ones a 3-way cross-entropy."""
    layout, logits, target, uncertain = _mixed_batch()
    loss = MixedPolicyLoss(MaskedFocalLoss(gamma=2.0), layout)(logits, target, uncertain)
    # independent: per cell, then one mean over every trained cell
    cells = []
    for k, multi in enumerate(layout.multiclass):
        s = layout.start[k]
        for b in range(6):
            y, u = target[b, k], bool(uncertain[b, k])
            if multi:
                cls = 2 if u else (None if torch.isnan(y) else int(y >= 0.5))
                if cls is not None:
                    cells.append(F.cross_entropy(logits[b, s:s + 3][None], torch.tensor([cls])))
            elif not torch.isnan(y):
                p = torch.sigmoid(logits[b, s])
                p_t = p if y == 1 else 1 - p
                cells.append(-(1 - p_t) ** 2 * torch.log(p_t))
    torch.testing.assert_close(loss, torch.stack(cells).mean())
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_mixed_policy_loss_reduces_to_the_pure_losses():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 2, (5, 4), generator=g).float()
    uncertain = torch.rand(5, 4, generator=g) < 0.3
    z = torch.randn(5, 4, generator=g)
    torch.testing.assert_close(MixedPolicyLoss(MaskedBCELoss(), OutputLayout(False, 4))(z, target, uncertain),
                               MaskedBCELoss()(z, target, uncertain))
    z3 = torch.randn(5, 12, generator=g)
    t = target.masked_fill(uncertain, float("nan"))
    torch.testing.assert_close(MixedPolicyLoss(None, OutputLayout(True, 4))(z3, t, uncertain),
                               MulticlassUncertaintyLoss()(z3, t, uncertain))


def test_uncertain_cell_of_a_ones_pathology_trains_as_positive():
    """{default: multiclass, Atelectasis: ones}: Atelectasis' uncertain cell (target 1) is trained as
    positive by the binary loss, not as the class "uncertain"."""
    layout = OutputLayout([False, True], 2)
    target = torch.tensor([[1.0, float("nan")]])
    uncertain = torch.tensor([[True, True]])
    logits = torch.tensor([[3.0, 0.0, 0.0, 5.0]])  # confident positive for pathology 0, "uncertain" for 1
    loss = MixedPolicyLoss(MaskedBCELoss(), layout)(logits, target, uncertain)
    expected = (F.softplus(torch.tensor(-3.0)) + F.cross_entropy(torch.tensor([[0.0, 0.0, 5.0]]), torch.tensor([2]))) / 2
    torch.testing.assert_close(loss, expected)


def test_mixed_layout_probabilities():
    layout, logits, _, _ = _mixed_batch()
    p = layout.probabilities(logits.detach())
    for k, multi in enumerate(layout.multiclass):
        s = layout.start[k]
        z = logits[:, s + 1] - logits[:, s] if multi else logits[:, s]
        torch.testing.assert_close(p[:, k], torch.sigmoid(z.detach()))
    torch.testing.assert_close(probabilities(logits.detach(), layout.multiclass), p)
    classes = multiclass_classes(torch.tensor([[1.0, 0.0, float("nan"), 0.7]]), torch.tensor([[False, True, False, False]]))
    assert classes.tolist() == [[1, 2, -1, 1]]


def test_weights_of_another_width_are_refused():
    """A weight vector for 5 classes must not broadcast silently over 1 output."""
    with pytest.raises(ValueError, match="5 entries for 1 outputs"):
        WeightedBCELoss(np.full(5, 0.5), np.full(5, 0.5))(torch.zeros(2, 1), torch.ones(2, 1))
