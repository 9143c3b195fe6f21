"""Core callbacks: NoMoreNaNs, PanelUpdateLimiter, warm-ups, OptConfig, CostCoefWarmup, OneCycle, EpochSave,
prediction handlers, EvalMetric."""

from functools import partial

import numpy as np
import pytest
import torch
from torch import optim

from tomopt_lib.optimisation.callbacks import (
    CostCoefWarmup,
    EpochSave,
    EvalMetric,
    NoMoreNaNs,
    OneCycle,
    OptConfig,
    PanelUpdateLimiter,
    PostWarmupCallback,
    PredHandler,
    VolumeTargetPredHandler,
    WarmupCallback,
)
from tomopt_lib.optimisation.data import PassiveYielder, RandomBlockPassiveGenerator
from tomopt_lib.optimisation.loss import VoxelX0Loss
from tomopt_lib.optimisation.wrapper import FitParams, PanelVolumeWrapper
from tomopt_lib.volume.builders import build_panel_volume

MATS = ["beryllium", "aluminium", "iron", "lead"]


def make_wrapper(budget=None, lr=1e-3):
    vol = build_panel_volume(budget=budget)
    return PanelVolumeWrapper(
        vol,
        xy_pos_opt=partial(optim.SGD, lr=lr),
        z_pos_opt=partial(optim.SGD, lr=lr),
        xy_span_opt=partial(optim.SGD, lr=lr, momentum=0.9),
        budget_opt=partial(optim.SGD, lr=lr) if budget else None,
        loss_func=VoxelX0Loss(target_budget=None),
        seed=0,
    )


def passives(vw, n, seed=1):
    gen = RandomBlockPassiveGenerator(vw.volume, materials=MATS, block_size=None, sort_x0=False, enforce_diff_mat=True, seed=seed)
    return PassiveYielder(gen, n_passives=n)


def panels(vw):
    return [p for d in vw.volume.get_detectors() for p in d.panels]


def attach(vw, cbs, **kw):
    vw.fit_params = FitParams(cbs=cbs, warmup_cbs=[c for c in cbs if isinstance(c, WarmupCallback)], **kw)
    vw.fit_params.warmup_done = not vw.fit_params.warmup_cbs
    for c in cbs:
        c.set_wrapper(vw)


def test_no_more_nans():
    vw = make_wrapper(budget=10.0)
    cb = NoMoreNaNs()
    attach(vw, [cb], state="train")
    for p in panels(vw):
        p.xy.grad = torch.tensor([float("nan"), 1.0])
        p.z.grad = torch.tensor([float("nan")])
        p.xy_span.grad = torch.tensor([2.0, float("nan")])
    vw.volume.budget_weights.grad = torch.full_like(vw.volume.budget_weights, float("nan"))
    cb.on_backwards_end()
    for p in panels(vw):
        assert p.xy.grad.tolist() == [0.0, 1.0] and p.z.grad.tolist() == [0.0] and p.xy_span.grad.tolist() == [2.0, 0.0]
    assert (vw.volume.budget_weights.grad == 0).all()


def test_panel_update_limiter():
    vw = make_wrapper()
    cb = PanelUpdateLimiter(max_xy_step=(0.1, 0.2), max_z_step=0.01, max_xy_span_step=None)
    attach(vw, [cb], state="train")
    cb.on_backwards_end()
    with torch.no_grad():
        for p in panels(vw):
            p.xy += torch.tensor([1.0, -1.0])
            p.z += 0.005
            p.xy_span += 0.5
    cb.on_step_end()
    for p in panels(vw):
        assert p.xy.detach().tolist() == pytest.approx([0.6, 0.3])
        assert p.xy_span.detach().tolist() == pytest.approx([1.5, 1.5])
    with pytest.raises(ValueError, match="max_z_step"):
        PanelUpdateLimiter(max_z_step=-1)


def test_warmup_sequencing_and_post_warmup():
    vw = make_wrapper()
    w1, w2, post = WarmupCallback(1), WarmupCallback(2), PostWarmupCallback()
    attach(vw, [w1, w2, post], state="train")
    for c in (w1, w2, post):
        c.on_train_begin()
    fp = vw.fit_params
    states = []
    for _epoch in range(4):
        fp.state = "train"
        for c in (w1, w2, post):
            c.on_epoch_begin()
        states.append((w1.warmup_active, w2.warmup_active, fp.skip_opt_step, post.active))
        w1.on_epoch_end()
        w2.on_epoch_end()
    assert states == [
        (True, False, True, False),
        (False, True, True, False),
        (False, True, True, False),
        (False, False, False, True),
    ]
    assert fp.warmup_done


def test_cost_coef_warmup_and_opt_config_in_fit():
    vw = make_wrapper()
    vw.loss_func = VoxelX0Loss(target_budget=5.0, cost_coef=123.0)
    rates = {"xy_pos_opt": 0.01, "xy_span_opt": 0.02}
    ccw, oc = CostCoefWarmup(1), OptConfig(1, rates)
    errs, _grads = [], {k: [] for k in rates}
    hist = []

    from tomopt_lib.optimisation.callbacks import Callback

    class Spy(Callback):
        def on_volume_end(self):
            if self.wrapper.fit_params.state == "train" and ccw.warmup_active:
                errs.append(float(self.wrapper.loss_func.sub_losses["error"]))

        def on_step_end(self):
            hist.append(self.wrapper.fit_params.skip_opt_step)

    vw.fit(3, 1, 300, 300, passives(vw, 2), cbs=[ccw, oc, Spy()])
    assert float(vw.loss_func.cost_coef) == pytest.approx(float(np.median(errs)), rel=1e-5)
    assert len(errs) == 2
    assert hist == [True, True, True, True, False, False]  # 1 epoch each, sequential, then updates
    for k, rate in rates.items():
        med = float(np.median(oc.grads[k]))
        assert vw.get_opt_lr(k) == pytest.approx(rate / med, rel=1e-5)
    with pytest.raises(ValueError, match="rates"):
        vw.fit(1, 1, 100, 100, passives(vw, 1), cbs=[OptConfig(1, {"bogus_opt": 1.0})])


def test_one_cycle_schedule():
    vw = make_wrapper()
    cb = OneCycle(
        "xy_span_opt", warmup_length=2, init_lr=1e-3, mid_lr=1e-1, final_lr=1e-4, init_mom=0.95, mid_mom=0.85, final_mom=0.95
    )
    vw.fit(6, 1, 200, 200, passives(vw, 1), cbs=[cb])
    lrs = [h[0] for h in cb.hist]
    moms = [h[1] for h in cb.hist]
    assert len(lrs) == 6
    assert lrs[0] == pytest.approx(1e-3) and max(lrs) == pytest.approx(1e-1) and lrs[-1] == pytest.approx(1e-4)
    assert moms[0] == pytest.approx(0.95) and min(moms) == pytest.approx(0.85) and moms[-1] == pytest.approx(0.95)
    assert int(np.argmax(lrs)) == 2 and int(np.argmin(moms)) == 2
    with pytest.raises(ValueError, match="opt"):
        vw.fit(1, 1, 100, 100, passives(vw, 1), cbs=[OneCycle("nope", 1, init_lr=1, mid_lr=1, final_lr=1)])


def test_epoch_save(tmp_path):
    vw = make_wrapper()
    vw.fit(2, 1, 200, 200, passives(vw, 1), passives(vw, 1, seed=4), cbs=[EpochSave()], cb_savepath=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume_state_1.pt", "volume_state_2.pt"]
    vw2 = make_wrapper()
    vw2.load(tmp_path / "volume_state_2.pt")
    assert all(torch.equal(a.xy, b.xy) for a, b in zip(panels(vw), panels(vw2)))


def test_pred_handlers():
    vw = make_wrapper()
    preds = vw.predict(passives(vw, 2), 300, 300)
    assert len(preds) == 2 and all(p.shape == t.shape == (6, 10, 10) for p, t in preds)
    x02id = {0.3528: 0, 0.0889: 1, 0.0176: 2, 0.0056: 3}
    vt = vw.predict(passives(vw, 2), 300, 300, pred_cb=VolumeTargetPredHandler(x02id=x02id))
    assert all(t.dtype == np.int64 and t.item() in (0, 1, 2, 3) for _, t in vt)
    vf = vw.predict(passives(vw, 1), 300, 300, pred_cb=VolumeTargetPredHandler())
    assert vf[0][1].dtype == np.float32
    h = PredHandler()
    assert h.get_preds() == []


def test_eval_metric_single_main():
    vw = make_wrapper()
    m1, m2 = EvalMetric(True, name="a"), EvalMetric(False, name="b")
    attach(vw, [m1, m2], metric_cbs=[m1, m2])
    m1.on_train_begin()
    m2.on_train_begin()
    assert m1.main_metric and not m2.main_metric
