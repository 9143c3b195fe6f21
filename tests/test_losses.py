"""Losses: budget term, automatic cost_coef, the error terms and integer_class_loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from tomopt_lib.optimisation.loss import (
    AbsDetectorLoss,
    VolumeClassLoss,
    VolumeIntClassLoss,
    VolumeMSELoss,
    VoxelClassLoss,
    VoxelX0Loss,
    integer_class_loss,
)


class FakeVolume:
    """Minimal volume: a (2, 2, 2) X0 cube, a differentiable cost and a target."""

    def __init__(self, cost: float = 5.0, target=None):
        self.cost = torch.tensor(cost, requires_grad=True)
        self.cube = torch.tensor([[[0.1, 0.1], [0.01, 0.1]], [[0.1, 0.01], [0.1, 0.1]]])
        self.target = target

    def get_rad_cube(self):
        return self.cube

    def get_cost(self):
        return self.cost * 1


class ConstLoss(AbsDetectorLoss):
    def _get_inference_loss(self, pred, volume):
        return pred.sum()


@pytest.mark.parametrize("tb", [0, -1.0])
def test_target_budget_must_be_positive(tb):
    with pytest.raises(ValueError, match="target_budget"):
        VoxelX0Loss(target_budget=tb)


def test_sub_losses_and_auto_cost_coef():
    loss = ConstLoss(target_budget=5.0)
    vol = FakeVolume(cost=5.0)
    out = loss(torch.tensor(2.0), vol)
    assert set(loss.sub_losses) == {"error", "cost"}
    assert float(loss.cost_coef) == pytest.approx(2.0)  # first error value
    assert float(loss.sub_losses["cost"]) == pytest.approx(2.0)  # budget coef 1 at budget
    assert float(out.detach()) == pytest.approx(4.0)
    loss(torch.tensor(7.0), vol)
    assert float(loss.cost_coef) == pytest.approx(2.0)  # latched
    loss.reset_cost_coef()
    loss(torch.tensor(7.0), vol)
    assert float(loss.cost_coef) == pytest.approx(7.0)
    fixed = ConstLoss(target_budget=5.0, cost_coef=3.0)
    fixed.reset_cost_coef()
    assert fixed.cost_coef == 3.0
    assert ConstLoss(target_budget=5.0, cost_coeff=1.5).cost_coeff == 1.5


def test_budget_term_shapes_and_gradients():
    loss = ConstLoss(target_budget=10.0, cost_coef=1.0)
    vals, grads = [], []
    for c in (5.0, 10.0, 15.0, 20.0):
        vol = FakeVolume(cost=c)
        loss(torch.tensor(0.0), vol).backward()
        vals.append(float(loss.sub_losses["cost"]))
        grads.append(float(vol.cost.grad))
    assert vals[0] < vals[1] < vals[2] < vals[3]
    assert vals[1] == pytest.approx(1.0)
    assert vals[2] == pytest.approx(1 + 10 * 0.5 / 2)  # steep: 1 + d/2
    assert all(g > 0 for g in grads)
    assert grads[2] == pytest.approx(grads[3])  # linear above budget
    smooth = ConstLoss(target_budget=10.0, cost_coef=1.0, steep_budget=False)
    smooth(torch.tensor(0.0), FakeVolume(cost=15.0))
    assert float(smooth.sub_losses["cost"]) == pytest.approx(2 * torch.sigmoid(torch.tensor(5.0)).item() + 0.5)
    none = ConstLoss(target_budget=None)
    none(torch.tensor(1.0), FakeVolume())
    assert float(none.sub_losses["cost"]) == 0


def test_voxel_x0_loss():
    vol = FakeVolume()
    pred = vol.cube + 0.1
    loss = VoxelX0Loss(target_budget=None)
    assert float(loss(pred, vol)) == pytest.approx(0.01)
    assert float(loss((pred, torch.ones_like(pred)), vol)) == pytest.approx(0.01)  # (pred, unc) accepted


def test_voxel_class_loss():
    vol = FakeVolume()
    x02id = {0.01: 0, 0.1: 1}
    ids = (vol.cube > 0.05).long().flatten()
    good = torch.log(F.one_hot(ids, 2).float().T[None] * 0.98 + 0.01)
    bad = torch.log(F.one_hot(1 - ids, 2).float().T[None] * 0.98 + 0.01)
    loss = VoxelClassLoss(x02id=x02id, target_budget=None)
    assert float(loss(good, vol)) < 0.05 < float(loss(bad, vol))


def test_volume_class_loss_multi_and_binary():
    x02id = {0.0056: 0, 0.0176: 1, 0.0889: 2}
    vol = FakeVolume(target=torch.tensor([0.0176]))
    loss = VolumeClassLoss(x02id=x02id, target_budget=None)
    good = torch.log(torch.tensor([[0.05, 0.9, 0.05]]))
    bad = torch.log(torch.tensor([[0.9, 0.05, 0.05]]))
    assert float(loss(good, vol)) == pytest.approx(-math.log(0.9))
    assert float(loss(good, vol)) < float(loss(bad, vol))
    bin_loss = VolumeClassLoss(x02id={0.0056: 0, 0.0889: 1}, target_budget=None)
    vol_b = FakeVolume(target=torch.tensor([0.0889]))
    assert float(bin_loss(torch.tensor([[0.9]]), vol_b)) == pytest.approx(-math.log(0.9), rel=1e-5)
    assert float(bin_loss(torch.tensor([[0.9]]), vol_b)) < float(bin_loss(torch.tensor([[0.1]]), vol_b))


def test_integer_class_loss_and_volume_int_class_loss():
    targ = torch.tensor([3])
    close = torch.softmax(torch.tensor([[1.0, 3, 10, 5, 5, 3, 1]]), -1)
    far = torch.softmax(torch.tensor([[10.0, 3, 1, 5, 5, 3, 1]]), -1)
    for mse in (False, True):
        assert integer_class_loss(close, targ, 0, mse) < integer_class_loss(far, targ, 0, mse)
    assert integer_class_loss(far, targ, 0, True) > integer_class_loss(far, targ, 0, False)
    # TomOpt's normalisation (errors summing to 1 over the candidates): the API document's example, whose unnormalised
    # squared-error values are 1.0007 (close) and 8.8773 (far), divided by sum_k (3 - k)^2 = 28 for k = 0..6
    assert float(integer_class_loss(close, targ, 0, True)) == pytest.approx(1.0007 / 28, abs=1e-4)
    assert float(integer_class_loss(far, targ, 0, True)) == pytest.approx(8.8773 / 28, abs=1e-4)
    k = torch.arange(7.0)
    assert float(integer_class_loss(far, targ, 0, False)) == pytest.approx(float((far[0] * (3 - k).abs()).sum() / 12))
    probs = torch.softmax(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)), -1)
    t = torch.tensor([0, 1, 2, 4])
    none = integer_class_loss(probs, t, 0, False, reduction="none")
    assert none.shape == (4,)
    assert integer_class_loss(probs, t, 0, False, reduction="sum") == pytest.approx(float(none.sum()))
    assert integer_class_loss(probs, t, 0, False) == pytest.approx(float(none.mean()))
    w = torch.tensor([1.0, 0.0, 2.0, 1.0])
    assert integer_class_loss(probs, t, 0, False, weight=w, reduction="none") == pytest.approx((none * w).tolist())
    with pytest.raises(ValueError, match="reduction"):
        integer_class_loss(probs, t, 0, False, reduction="max")
    vol = FakeVolume(target=torch.tensor([0.3]))
    loss = VolumeIntClassLoss(targ2int=lambda t, v: (t * 10).round().long(), pred_int_start=0, use_mse=False, target_budget=None)
    p_close = torch.softmax(torch.tensor([[0.0, 1, 3, 9, 3]]), -1)
    p_far = torch.softmax(torch.tensor([[9.0, 3, 1, 0, 1]]), -1)
    assert float(loss(p_close, vol)) < float(loss(p_far, vol))


def test_volume_mse_loss():
    vol = FakeVolume(target=torch.tensor([2.0]))
    assert float(VolumeMSELoss(target_budget=None)(torch.tensor([[1.5]]), vol)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="target"):
        VolumeMSELoss(target_budget=None)(torch.tensor([[1.5]]), FakeVolume())


def test_voxel_log_x0_loss_is_relative_and_differentiable():
    """MSE of log X0: a factor-2 error costs the same for lead and beryllium; zero for a perfect prediction."""
    from tomopt_lib.core import X0
    from tomopt_lib.optimisation.loss import VoxelLogX0Loss

    class _Vol:
        def __init__(self, cube):
            self._cube = cube

        def get_rad_cube(self):
            return self._cube

        def get_cost(self):
            return torch.tensor(1.0)

    true = torch.tensor([[[X0["lead"], X0["beryllium"]]]])
    loss = VoxelLogX0Loss(target_budget=None)
    assert float(loss(true.clone(), _Vol(true))) == pytest.approx(0.0, abs=1e-12)
    pred_pb = true.clone()
    pred_pb[0, 0, 0] *= 2
    pred_be = true.clone()
    pred_be[0, 0, 1] *= 2
    assert float(loss(pred_pb, _Vol(true))) == pytest.approx(float(loss(pred_be, _Vol(true))), rel=1e-5)
    assert float(loss(pred_pb, _Vol(true))) == pytest.approx(math.log(2) ** 2 / 2, rel=1e-5)
    pred = true.clone().requires_grad_(True)
    (loss(pred * 1.5, _Vol(true))).backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad > 0).all()
    with pytest.raises(ValueError, match="min_x0"):
        VoxelLogX0Loss(target_budget=None, min_x0=0.0)
