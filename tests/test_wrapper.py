"""Volume wrappers: construction, save/load, lr/momentum, gradients, loops, stability, seeding, bad input."""

import logging
from collections import Counter
from functools import partial

import pytest
import torch
from torch import optim

from tomopt_lib.optimisation.callbacks import Callback, CyclicCallback, EvalMetric, NoMoreNaNs, WarmupCallback
from tomopt_lib.optimisation.data import PassiveYielder, RandomBlockPassiveGenerator
from tomopt_lib.optimisation.loss import VoxelX0Loss
from tomopt_lib.optimisation.wrapper import ArbVolumeWrapper, FitParams, PanelVolumeWrapper
from tomopt_lib.volume.builders import build_panel_volume

MATS = ["beryllium", "aluminium", "iron", "lead"]
HOOKS = [h for h in dir(Callback) if h.startswith("on_")]


class Counting(Callback):
    """Counts every hook call and records the order of the first calls."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()
        self.order = []
        for h in HOOKS:
            setattr(self, h, self._make(h))

    def _make(self, hook):
        def f():
            self.counts[hook] += 1
            self.order.append((hook, self.wrapper.fit_params.state))

        return f


def make_wrapper(lrs=(1e-3, 1e-4, 1e-3), *, budget=None, sigmoid=None, seed=0, target_budget=None, **kw):
    vol = build_panel_volume(budget=budget, sigmoid_smooth=sigmoid)
    budget_opt = partial(optim.SGD, lr=1e-1) if budget is not None else None
    return PanelVolumeWrapper(
        vol,
        xy_pos_opt=partial(optim.SGD, lr=lrs[0]),
        z_pos_opt=partial(optim.SGD, lr=lrs[1]),
        xy_span_opt=partial(optim.SGD, lr=lrs[2]),
        budget_opt=budget_opt,
        loss_func=VoxelX0Loss(target_budget=target_budget),
        seed=seed,
        **kw,
    )


def passives(vw, n, seed=1):
    return PassiveYielder(
        RandomBlockPassiveGenerator(vw.volume, materials=MATS, block_size=None, sort_x0=False, enforce_diff_mat=True, seed=seed),
        n_passives=n,
    )


def panel_params(vw):
    return torch.cat([p.detach().reshape(-1).clone() for o in vw.opts.values() for g in o.param_groups for p in g["params"]])


def all_panels(vw):
    return [p for d in vw.volume.get_detectors() for p in d.panels]


def test_construction_lr_mom_param_count():
    vw = make_wrapper()
    assert set(vw.opts) == {"xy_pos_opt", "z_pos_opt", "xy_span_opt"}
    assert vw.get_param_count() == 8 * 5
    assert vw.get_opt_lr("xy_pos_opt") == pytest.approx(1e-3)
    vw.set_opt_lr(0.5, "xy_pos_opt")
    assert vw.get_opt_lr("xy_pos_opt") == 0.5
    vw.set_opt_mom(0.9, "z_pos_opt")
    assert vw.get_opt_mom("z_pos_opt") == 0.9
    with pytest.raises(ValueError, match="opt='nope'"):
        vw.get_opt_lr("nope")
    vol = build_panel_volume()
    adam = PanelVolumeWrapper(
        vol,
        xy_pos_opt=partial(optim.Adam, lr=1e-3),
        z_pos_opt=None,
        xy_span_opt=None,
        loss_func=None,
        partial_volume_inferrer="path",
    )
    adam.set_opt_mom(0.8, "xy_pos_opt")
    assert adam.get_opt_mom("xy_pos_opt") == 0.8
    fixed = make_wrapper(budget=10.0)
    assert "budget_opt" in fixed.opts and fixed.get_param_count() == 8 * 5 + 8


def test_bad_inputs():
    with pytest.raises(ValueError, match="budget_opt"):
        PanelVolumeWrapper(
            build_panel_volume(), xy_pos_opt=None, z_pos_opt=None, xy_span_opt=None, budget_opt=partial(optim.SGD, lr=1)
        )
    with pytest.raises(ValueError, match="partial_volume_inferrer"):
        make_wrapper(partial_volume_inferrer="nonexistent")
    vol, other = build_panel_volume(), build_panel_volume()
    with pytest.raises(ValueError, match="opts\\['foreign'\\]"):
        ArbVolumeWrapper(vol, opts={"foreign": optim.SGD(other.parameters(), lr=1)})
    vw = make_wrapper()
    with pytest.raises(ValueError, match="passives"):
        vw.predict([], 100, 100)
    with pytest.raises(ValueError, match="passives"):
        vw.predict(None, 100, 100)
    for bs in (0, -5):
        with pytest.raises(ValueError, match="mu_bs"):
            vw.fit(1, 1, 100, bs, passives(vw, 1))
        with pytest.raises(ValueError, match="mu_bs"):
            vw.predict(passives(vw, 1), 100, bs)
    with pytest.raises(ValueError, match="passive_bs"):
        vw.fit(1, 3, 100, 100, passives(vw, 2))


def test_save_load_from_save(tmp_path):
    vw = make_wrapper()
    vw.fit(1, 1, 300, 300, passives(vw, 1))
    before = panel_params(vw)
    vw.save(tmp_path / "w.pt")
    vw2 = make_wrapper()
    assert not torch.equal(panel_params(vw2), before)
    vw2.load(tmp_path / "w.pt")
    assert torch.equal(panel_params(vw2), before)
    coef = vw.loss_func.cost_coef  # set automatically from the first error value by the fit
    assert isinstance(coef, torch.Tensor) and float(coef) > 0
    kw = dict(xy_pos_opt=partial(optim.SGD, lr=1), z_pos_opt=partial(optim.SGD, lr=1), xy_span_opt=partial(optim.SGD, lr=1))
    # from_save restores the volume, the optimiser states (their lr included) and the loss's cost_coef
    vw3 = PanelVolumeWrapper.from_save(
        tmp_path / "w.pt", volume=build_panel_volume(), loss_func=VoxelX0Loss(target_budget=None), **kw
    )
    assert torch.equal(panel_params(vw3), before)
    assert isinstance(vw3.loss_func.cost_coef, torch.Tensor) and torch.equal(vw3.loss_func.cost_coef, coef)
    assert [vw3.get_opt_lr(k) for k in ("xy_pos_opt", "z_pos_opt", "xy_span_opt")] == pytest.approx([1e-3, 1e-4, 1e-3])
    # without a loss function there is nothing to restore the coefficient into: still loads, no loss appears
    vw4 = PanelVolumeWrapper.from_save(tmp_path / "w.pt", volume=build_panel_volume(), **kw)
    assert vw4.loss_func is None and torch.equal(panel_params(vw4), before)
    # a fresh loss keeps its automatic coefficient unset until it sees an error value; the saved one replaces that
    assert VoxelX0Loss(target_budget=None).cost_coef is None


@pytest.mark.parametrize("mode", ["gauss", "sigmoid", "fixed_budget"])
def test_gradients_reach_every_parameter(mode):
    vw = make_wrapper(
        budget=10.0 if mode == "fixed_budget" else None,
        sigmoid=0.1 if mode == "sigmoid" else None,
        target_budget=None if mode == "fixed_budget" else 5.0,
    )
    vw.fit(1, 1, 400, 400, passives(vw, 1), cbs=[])  # sets cost_coef etc.
    grads = {}

    class Grab(Callback):
        def on_backwards_end(self):
            for name, opt in self.wrapper.opts.items():
                grads[name] = [p.grad.clone() for p in opt.param_groups[0]["params"]]

    vw.fit(1, 1, 400, 400, passives(vw, 1, seed=3), cbs=[Grab(), WarmupCallback(1)])
    for name, gs in grads.items():
        for g in gs:
            assert torch.isfinite(g).all() and (g.abs() > 0).any(), name
    if mode == "fixed_budget":
        assert "budget_opt" in grads


def test_one_sgd_step_moves_positions_not_res_eff():
    vw = make_wrapper(lrs=(1e-2, 1e-3, 1e-2))
    res = [p.resolution.clone() for p in all_panels(vw)]
    eff = [p.efficiency.clone() for p in all_panels(vw)]
    xy = [p.xy.detach().clone() for p in all_panels(vw)]
    z = [p.z.detach().clone() for p in all_panels(vw)]
    span = [p.xy_span.detach().clone() for p in all_panels(vw)]
    vw.fit(1, 1, 400, 400, passives(vw, 1))
    assert vw.fit_params.n_updates == 1
    ps = all_panels(vw)
    assert any(not torch.equal(a, p.xy) for a, p in zip(xy, ps))
    assert any(not torch.equal(a, p.z) for a, p in zip(z, ps))
    assert any(not torch.equal(a, p.xy_span) for a, p in zip(span, ps))
    assert all(torch.equal(a, p.resolution) for a, p in zip(res, ps))
    assert all(torch.equal(a, p.efficiency) for a, p in zip(eff, ps))


def test_fit_call_counts_and_order():
    vw = make_wrapper()
    cb = Counting()
    vw.fit(1, 1, 300, 150, passives(vw, 3), passives(vw, 2, seed=5), cbs=[cb])
    c = cb.counts
    assert c["on_train_begin"] == c["on_train_end"] == 1
    assert c["on_epoch_begin"] == c["on_epoch_end"] == 2
    assert c["on_volume_begin"] == c["on_volume_end"] == 5
    assert c["on_mu_batch_begin"] == c["on_mu_batch_end"] == c["on_scatter_end"] == 10
    assert c["on_x0_pred_begin"] == c["on_x0_pred_end"] == 5
    assert c["on_volume_batch_begin"] == c["on_volume_batch_end"] == 5
    assert c["on_backwards_begin"] == c["on_backwards_end"] == c["on_step_end"] == 3
    assert c["on_pred_begin"] == 0
    assert vw.fit_params.n_updates == 3
    first = [h for h, _ in cb.order[:12]]
    assert first[:6] == [
        "on_train_begin",
        "on_epoch_begin",
        "on_volume_batch_begin",
        "on_volume_begin",
        "on_mu_batch_begin",
        "on_scatter_end",
    ]
    i = [h for h, _ in cb.order].index("on_volume_end")
    assert [h for h, _ in cb.order][i : i + 5] == [
        "on_volume_end",
        "on_volume_batch_end",
        "on_backwards_begin",
        "on_backwards_end",
        "on_step_end",
    ]
    assert {s for h, s in cb.order if h == "on_volume_begin"} == {"train", "valid"}


def test_per_volume_backward_and_batch_gradients():
    """Each volume is back-propagated at once: grads already exist when the 2nd volume of a batch begins,
    and no per-volume graph is held at the end of the batch."""
    vw = make_wrapper()
    seen = []

    class Check(Callback):
        def on_volume_begin(self):
            fp = self.wrapper.fit_params
            has = any(p.grad is not None for p in self.wrapper.opts["xy_pos_opt"].param_groups[0]["params"])
            seen.append((fp.volume_id % fp.passive_bs, has))

        def on_volume_batch_end(self):
            fp = self.wrapper.fit_params
            assert not fp.loss_val.requires_grad and not fp.mean_loss.requires_grad

    vw.fit(1, 4, 300, 300, passives(vw, 4), cbs=[Check()])
    assert seen == [(0, False), (1, True), (2, True), (3, True)]


def test_warmup_skips_step_and_predict():
    vw = make_wrapper()
    start = [(p.xy.detach().clone(), p.xy_span.detach().clone()) for p in all_panels(vw)]
    vw.fit(1, 1, 300, 300, passives(vw, 2), cbs=[WarmupCallback(1)])
    assert vw.fit_params.n_updates == 0  # (conform_detector may still jitter z off a layer edge)
    assert all(torch.equal(a, p.xy) and torch.equal(b, p.xy_span) for (a, b), p in zip(start, all_panels(vw)))
    cb = Counting()
    preds = vw.predict(passives(vw, 2), 300, 300, cbs=[cb])
    assert len(preds) == 2 and preds[0][0].shape == preds[0][1].shape == (6, 10, 10)
    assert cb.counts["on_pred_begin"] == cb.counts["on_pred_end"] == 1
    assert cb.counts["on_backwards_begin"] == 0 and {s for _, s in cb.order if s} == {"test"}
    one = vw.predict(passives(vw, 1), 1000, 1000)  # one muon batch per volume
    assert len(one) == 1


def test_sort_cbs():
    cbs = [Callback(), CyclicCallback(), EvalMetric(False)]
    cyclic, metric_log, metric_cbs = PanelVolumeWrapper._sort_cbs(cbs)
    assert cyclic == [cbs[1]] and metric_log is None and metric_cbs == [cbs[2]]
    fp = make_wrapper().fit_params  # a fresh wrapper: an idle loop state, nothing counted yet
    assert isinstance(fp, FitParams) and fp.device == torch.device("cpu")
    assert (fp.state, fp.epoch, fp.n_epochs, fp.passives, fp.cbs) == (None, 0, None, None, [])
    assert fp.n_updates == fp.n_rejected_updates == fp.n_skipped_mu_batches == fp.n_recoveries == 0
    assert not (fp.stop or fp.skip_opt_step or fp.skip_backward or fp.warmup_active or fp.warmup_done)
    with pytest.raises(ValueError, match="state"):
        FitParams(state="bogus")


def test_seeded_runs_repeatable():
    out = []
    for _ in range(2):
        vw = make_wrapper(lrs=(1e-2, 1e-3, 1e-2), seed=7)
        vw.fit(2, 1, 300, 150, passives(vw, 2, seed=11))
        out.append(panel_params(vw))
    assert torch.equal(out[0], out[1])
    vw = make_wrapper(lrs=(1e-2, 1e-3, 1e-2), seed=8)
    vw.fit(2, 1, 300, 150, passives(vw, 2, seed=11))
    assert not torch.equal(out[0], panel_params(vw))


def in_bounds(vw):
    for det in vw.volume.get_detectors():
        lw = det.lw
        for p in det.panels:
            assert torch.isfinite(p.xy).all() and torch.isfinite(p.z).all() and torch.isfinite(p.xy_span).all()
            assert (p.xy >= 0).all() and (p.xy <= lw).all()
            assert det.z - det.size - 1e-6 <= float(p.z.detach()) <= float(det.z) + 1e-6
            assert (p.xy_span >= lw / 20 - 1e-6).all() and (p.xy_span <= 10 * lw + 1e-6).all()


def test_raw_learning_rates_do_not_crash(caplog):
    """Reference notebook lrs (SGD 5e4 xy, 5e3 z, 1e4 span) on the reference test volume: no crash, panels in
    bounds and finite, and the final detector still reconstructs muons."""
    vw = make_wrapper(lrs=(5e4, 5e3, 1e4), seed=0, target_budget=None)
    with caplog.at_level(logging.WARNING):
        vw.fit(2, 2, 400, 200, passives(vw, 4, seed=0), cbs=[NoMoreNaNs()])
    in_bounds(vw)
    preds = vw.predict(passives(vw, 1, seed=2), 400, 400)
    assert len(preds) == 1 and torch.isfinite(torch.as_tensor(preds[0][0])).all()


def test_empty_batches_are_skipped(caplog):
    vw = make_wrapper()

    class Away:  # every muon starts far outside the detector
        def __call__(self, n, generator=None):
            x = torch.zeros(n, 5)
            x[:, 0] = 100.0
            x[:, 2] = 5.0
            return x

    vw.mu_generator = Away()
    with caplog.at_level(logging.WARNING):
        vw.fit(1, 1, 200, 100, passives(vw, 2))
    assert vw.fit_params.n_skipped_mu_batches == 4
    assert "skipped" in caplog.text
    in_bounds(vw)


def test_non_finite_gradients_rejected(caplog):
    vw = make_wrapper(lrs=(1e-2, 1e-3, 1e-2))
    base = vw.loss_func

    def nan_grad_loss(pred, volume):
        xy = vw.volume.get_detectors()[0].panels[0].xy
        return base(pred, volume) + torch.sqrt(xy * 0).sum()  # finite value, NaN gradient

    vw.loss_func = nan_grad_loss
    start = [p.xy.detach().clone() for p in all_panels(vw)]
    with caplog.at_level(logging.WARNING):
        vw.fit(1, 1, 300, 300, passives(vw, 1))
    assert vw.fit_params.n_rejected_updates == 1
    assert all(torch.equal(a, p.xy) for a, p in zip(start, all_panels(vw)))
    assert "non-finite gradients" in caplog.text
    vw.fit(1, 1, 300, 300, passives(vw, 1), cbs=[NoMoreNaNs()])
    assert vw.fit_params.n_updates == 1
    assert not all(torch.equal(a, p.xy) for a, p in zip(start, all_panels(vw)))
