"""Shared pieces of the callback tests: a small panel volume, a stand-in wrapper holding a real ``FitParams``, and a
driver of the fit hooks (tests/test_callbacks_monitors.py, tests/test_callbacks_detector.py)."""

from types import SimpleNamespace

import torch

from tomopt_lib.muon.generation import MuonGenerator2016
from tomopt_lib.optimisation.wrapper.fit_state import FitParams
from tomopt_lib.volume import build_panel_volume

LW = 0.5


def x0_func(*, z, lw, size):
    n = int(round(float(lw[0]) / size))
    return torch.full((n, n), 0.05)


def make_volume(sigmoid_smooth=None):
    vol = build_panel_volume(
        passive_n_layers=3, lw=(LW, LW), voxel_size=0.1, sigmoid_smooth=sigmoid_smooth, n_panels_above=2, n_panels_below=2
    )
    vol.load_rad_length(x0_func)
    return vol


def make_wrapper(vol, tmp_path=None, **fp_kwargs):
    fp = FitParams(cb_savepath=tmp_path, **fp_kwargs)
    return SimpleNamespace(
        volume=vol,
        fit_params=fp,
        mu_generator=MuonGenerator2016.from_volume(vol, fixed_mom=5.0),
        loss_func=SimpleNamespace(sub_losses={}),
    )


def attach(cb, wrapper):
    cb.set_wrapper(wrapper)
    wrapper.fit_params.cbs.append(cb)
    return cb


class FakeMetric:
    """Stand-in ``EvalMetric``: returns the next value of a list."""

    def __init__(self, values, name="acc", lower_metric_better=False, main_metric=True):
        self.values, self.name = list(values), name
        self.lower_metric_better, self.main_metric = lower_metric_better, main_metric

    def get_metric(self):
        return self.values.pop(0)


def run_fake_fit(cb, wrapper, trn_losses, val_losses, sub_losses=None):
    """Drive ``cb`` through a fit: per epoch, training volume batches then validation volume batches."""
    fp = wrapper.fit_params
    fp.n_epochs = len(trn_losses)
    cb.on_train_begin()
    for e, (trn, val) in enumerate(zip(trn_losses, val_losses)):
        fp.epoch = e + 1
        fp.state = "train"
        cb.on_epoch_begin()
        for loss in trn:
            fp.mean_loss = torch.tensor(loss)
            cb.on_volume_batch_end()
            cb.on_backwards_end()
        cb.on_epoch_end()
        fp.state = "valid"
        cb.on_epoch_begin()
        for _i, loss in enumerate(val):
            if sub_losses is not None:
                wrapper.loss_func.sub_losses = {k: torch.tensor(v) for k, v in sub_losses[e].items()}
            cb.on_volume_end()
            fp.mean_loss, fp.n_volumes_in_batch = torch.tensor(loss), 1
            cb.on_volume_batch_end()
        cb.on_epoch_end()
    cb.on_train_end()
