"""Monitoring callbacks: MetricLogger (+ GIF), PanelMetricLogger, ScatterRecord, HitRecord, Save2HDF5PredHandler
(MuonResampler and the detector callbacks: tests/test_callbacks_detector.py).

Callbacks are driven through their hooks with a small stand-in wrapper holding a real ``FitParams``.
"""

import functools
import logging

import matplotlib

matplotlib.use("Agg")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from callback_helpers import LW, FakeMetric, attach, make_volume, make_wrapper, run_fake_fit  # noqa: E402
from PIL import Image  # noqa: E402

from tomopt_lib.inference.scattering import ScatterBatch  # noqa: E402
from tomopt_lib.muon.muon_batch import MuonBatch  # noqa: E402
from tomopt_lib.optimisation.callbacks.data_callbacks import MuonResampler  # noqa: E402
from tomopt_lib.optimisation.callbacks.detector_callbacks import PanelCentring, SigmoidPanelSmoothnessSchedule  # noqa: E402
from tomopt_lib.optimisation.callbacks.diagnostic_callbacks import HitRecord, ScatterRecord  # noqa: E402
from tomopt_lib.optimisation.callbacks.monitors import MetricLogger, PanelMetricLogger  # noqa: E402
from tomopt_lib.optimisation.callbacks.pred_callbacks import VolumeTargetPredHandler  # noqa: E402
from tomopt_lib.optimisation.callbacks.pred_callbacks_hdf5 import Save2HDF5PredHandler  # noqa: E402


# ---------------------------------------------------------------------------------------------------- MetricLogger
def test_metric_logger_history_best_and_gif(tmp_path, caplog):
    vol = make_volume()
    w = make_wrapper(vol, tmp_path)
    w.fit_params.metric_cbs = [FakeMetric([0.5, 0.9, 0.7])]
    w.fit_params.val_passives = object()
    cb = attach(MetricLogger(gif_filename="hist.gif", gif_length=3.0), w)
    trn = [[3.0, 2.5], [2.0, 1.8], [1.5, 1.6]]
    val = [[2.8, 3.2], [1.0, 1.4], [1.5, 1.7]]
    subs = [{"error": 3.0, "cost": 1.0}, {"error": 1.0, "cost": 1.0}, {"error": 1.0, "cost": 3.0}]
    with caplog.at_level(logging.INFO):
        run_fake_fit(cb, w, trn, val, subs)
    losses, metrics = cb.get_loss_history()
    assert losses["Training"] == pytest.approx([3.0, 2.5, 2.0, 1.8, 1.5, 1.6])
    assert losses["Validation"] == pytest.approx([3.0, 1.2, 1.6])
    assert metrics["acc"] == pytest.approx([0.5, 0.9, 0.7])
    assert cb.best_loss == pytest.approx(1.2) and cb.best_epoch == 1
    assert cb.sub_loss_vals["error"] == pytest.approx([0.75, 0.5, 0.25])
    assert cb.sub_loss_vals["cost"] == pytest.approx([0.25, 0.5, 0.75])
    assert cb.get_results(loaded_best=False) == pytest.approx({"loss": 1.6, "acc": 0.7})
    assert cb.get_results(loaded_best=True) == pytest.approx({"loss": 1.2, "acc": 0.9})  # higher acc is better
    assert "valid loss" in caplog.text
    gif = tmp_path / "hist.gif"
    assert gif.exists() and cb.gif_path == gif
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 4  # 3 epoch starts + final frame
        assert im.info.get("loop") == 0 and im.info.get("duration") == 750
    assert not (tmp_path / "hist_frames").exists()  # frames removed


def test_metric_logger_best_by_loss_without_metric_and_no_gif(tmp_path):
    w = make_wrapper(make_volume(), tmp_path)
    cb = attach(MetricLogger(gif_filename=None), w)
    run_fake_fit(cb, w, [[1.0], [1.0], [1.0]], [[2.0], [0.5], [0.7]])
    assert cb.get_results(loaded_best=True) == {"loss": pytest.approx(0.5)}
    assert cb.get_results() == {"loss": pytest.approx(0.7)}
    assert cb.best_loss == pytest.approx(0.5)
    assert list(tmp_path.iterdir()) == []


def test_metric_logger_train_only_and_keep_frames(tmp_path):
    w = make_wrapper(make_volume(), tmp_path)
    cb = attach(MetricLogger(gif_filename="g.gif", keep_frames=True), w)
    w.fit_params.n_epochs = 2
    cb.on_train_begin()
    for e, losses in enumerate([[4.0, 3.0], [2.0, 1.0]]):
        w.fit_params.state, w.fit_params.epoch = "train", e + 1
        cb.on_epoch_begin()
        for loss in losses:
            w.fit_params.mean_loss = torch.tensor(loss)
            cb.on_volume_batch_end()
        cb.on_epoch_end()
    cb.on_train_end()
    assert cb.get_loss_history()[0]["Validation"] == []
    assert cb.get_results() == {"loss": pytest.approx(1.5)}
    assert len(list((tmp_path / "g_frames").glob("*.png"))) == 3
    with Image.open(tmp_path / "g.gif") as im:
        assert im.n_frames == 3


def test_metric_logger_rejects_bad_length():
    with pytest.raises(ValueError, match="gif_length"):
        MetricLogger(gif_length=0)


@pytest.mark.parametrize("smooth", [None, 0.1])
def test_panel_metric_logger(tmp_path, smooth):
    vol = make_volume(sigmoid_smooth=smooth)
    w = make_wrapper(vol, tmp_path)
    cb = attach(PanelMetricLogger(gif_filename="panels.gif", gif_length=1.0, dpi=30), w)
    w.fit_params.state = "train"
    cb.on_train_begin()
    fig = cb.build_figure()
    n_panel_axes = 2 * (4 if smooth else 3)  # two detector layers
    assert len(fig.axes) == 2 + n_panel_axes
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert "above: xy and span" in titles and "below: z" in titles
    assert ("above: smooth" in titles) == (smooth is not None)
    for _ in range(2):
        cb.on_epoch_begin()
        with torch.no_grad():
            vol.get_detectors()[0].panels[0].xy += 0.1  # layout changes between frames
    cb.on_train_end()
    with Image.open(tmp_path / "panels.gif") as im:
        assert im.n_frames == 3
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB"), dtype=float))
    assert np.abs(frames[0] - frames[1]).sum() > 0


# ---------------------------------------------------------------------------------------------------- records
@pytest.fixture(scope="module")
def scattered():
    """A volume, its stand-in wrapper and a ScatterBatch of 400 seeded muons."""
    vol = make_volume()
    w = make_wrapper(vol)
    gen = torch.Generator().manual_seed(3)
    mu = MuonBatch(w.mu_generator.generate_set(400, generator=gen), init_z=vol.h)
    vol(mu, gen)
    return vol, w, ScatterBatch(mu, vol)


def test_scatter_record(scattered):
    vol, w, sb = scattered
    cb = attach(ScatterRecord(), w)
    w.fit_params.sb = sb
    cb.on_train_begin()
    assert cb.get_record().shape == (0, 3)
    cb.on_scatter_end()
    cb.on_scatter_end()
    rec = cb.get_record()
    n_in = int(sb.get_scatter_mask().sum())
    assert n_in > 0 and rec.shape == (2 * n_in, 3)
    assert torch.allclose(rec[:n_in], sb.poca_xyz.detach()[sb.get_scatter_mask()])
    assert (rec[:, :2] >= 0).all() and (rec[:, :2] <= LW).all() and (rec[:, 2] >= 0.2).all() and (rec[:, 2] <= 0.5).all()
    df = cb.get_record(as_df=True)
    assert isinstance(df, pd.DataFrame) and list(df.columns) == ["x", "y", "z"] and len(df) == 2 * n_in
    cb.on_pred_begin()
    assert len(cb.get_record()) == 0


def test_hit_record(scattered):
    vol, w, sb = scattered
    cb = attach(HitRecord(), w)
    w.fit_params.sb = sb
    cb.on_train_begin()
    cb.on_scatter_end()
    rec = cb.get_record()
    assert rec.shape == (sb.n_mu, 4, 3)
    assert torch.allclose(rec[:, :, 2], torch.tensor([0.7, 0.6, 0.2, 0.1]).expand(sb.n_mu, 4), atol=1e-5)
    df = cb.get_record(as_df=True)
    assert list(df.columns) == ["x", "y", "z", "panel"] and len(df) == 4 * sb.n_mu
    assert df.groupby("panel")["z"].mean().to_numpy() == pytest.approx([0.7, 0.6, 0.2, 0.1], abs=1e-5)


# ---------------------------------------------------------------------------------------------------- HDF5 preds
def drive_predict(cb, wrapper, preds, targets=None):
    """Drive a prediction handler over volumes with predictions ``preds`` (and volume ``targets``)."""
    fp = wrapper.fit_params
    cb.on_pred_begin()
    fp.state = "test"
    for i, pred in enumerate(preds):
        fp.volume_id = i
        wrapper.volume.load_rad_length(
            lambda *, z, lw, size, v=0.01 * (i + 1): torch.full((5, 5), v), None if targets is None else torch.tensor(targets[i])
        )
        fp.pred = torch.as_tensor(pred)
        cb.on_x0_pred_end()
    cb.on_pred_end()


def test_save2hdf5_pred_handler_contents_append_overwrite(tmp_path):
    path = tmp_path / "sub" / "preds.h5"
    w = make_wrapper(make_volume())
    cb = attach(Save2HDF5PredHandler(path), w)
    assert isinstance(cb, VolumeTargetPredHandler)
    preds = [np.full((3, 5, 5), 0.1, dtype=np.float32), np.full((3, 5, 5), 0.2, dtype=np.float32)]
    drive_predict(cb, w, preds)
    with h5py.File(path, "r") as f:
        assert f["preds"].shape == (2, 3, 5, 5) and f["targs"].shape == (2, 3, 5, 5)
        assert np.allclose(f["preds"][1], 0.2) and np.allclose(f["targs"][0], 0.01) and np.allclose(f["targs"][1], 0.02)
        assert f["preds"].compression == "lzf" and f["preds"].maxshape[0] is None
    assert cb.get_preds() == [] and cb.n_written == 2
    drive_predict(attach(Save2HDF5PredHandler(path), w), w, preds[:1])  # appends to the existing file
    with h5py.File(path, "r") as f:
        assert f["preds"].shape[0] == 3 and f["targs"].shape[0] == 3
    cb = attach(Save2HDF5PredHandler(path, overwrite=True, compression=None), w)
    drive_predict(cb, w, preds[1:])
    with h5py.File(path, "r") as f:
        assert f["preds"].shape[0] == 1 and np.allclose(f["preds"][0], 0.2) and f["preds"].compression is None
    drive_predict(cb, w, preds[:1])  # same handler again: the overwrite happens only once
    with h5py.File(path, "r") as f:
        assert f["preds"].shape[0] == 2
    with pytest.raises(ValueError, match="cannot append"):
        drive_predict(cb, w, [np.zeros((2, 2), dtype=np.float32)])
    with h5py.File(path, "r") as f:
        assert f["preds"].shape[0] == f["targs"].shape[0] == 2  # nothing half-written


def test_save2hdf5_pred_handler_volume_target_and_x02id(tmp_path):
    path = tmp_path / "cls.h5"
    w = make_wrapper(make_volume())
    cb = attach(Save2HDF5PredHandler(path, use_volume_target=True, x02id={0.0056: 0, 0.0176: 1, 0.3528: 2}), w)
    drive_predict(cb, w, [np.array([0.1, 0.9]), np.array([0.8, 0.2])], targets=[0.0176, 0.34])
    with h5py.File(path, "r") as f:
        assert f["targs"][:].reshape(-1).tolist() == [1, 2] and f["preds"].shape == (2, 2)
    cb = attach(Save2HDF5PredHandler(tmp_path / "vox.h5", x02id={0.005: 0, 0.02: 1}), w)
    drive_predict(cb, w, [np.zeros((3, 5, 5))])
    with h5py.File(tmp_path / "vox.h5", "r") as f:
        assert (f["targs"][0] == 0).all()  # voxel X0 0.01 m -> nearest 0.005
    with pytest.raises(ValueError, match="compression"):
        Save2HDF5PredHandler(path, compression="zstd")


# ---------------------------------------------------------------------------------------------------- integration
def test_tiny_fit_and_predict_with_callbacks(tmp_path):
    from tomopt_lib.optimisation.loss.loss import VoxelX0Loss
    from tomopt_lib.optimisation.wrapper.volume_wrapper import PanelVolumeWrapper

    vol = make_volume(sigmoid_smooth=0.5)

    def layout(v):
        return lambda *, z, lw, size: torch.full((5, 5), v)

    sgd = functools.partial(torch.optim.SGD, lr=1e-4)
    w = PanelVolumeWrapper(vol, xy_pos_opt=sgd, z_pos_opt=sgd, xy_span_opt=sgd, loss_func=VoxelX0Loss(target_budget=None), seed=0)
    cbs = [
        PanelMetricLogger(gif_filename="fit.gif", gif_length=2.0, dpi=30),
        MuonResampler(seed=1),
        SigmoidPanelSmoothnessSchedule((0.5, 0.05)),
        PanelCentring(),
        ScatterRecord(),
    ]
    w.fit(
        2,
        passive_bs=1,
        n_mu_per_volume=100,
        mu_bs=100,
        trn_passives=[layout(0.05)],
        val_passives=[layout(0.2)],
        cbs=cbs,
        cb_savepath=tmp_path,
    )
    losses, _ = cbs[0].get_loss_history()
    assert len(losses["Training"]) == 2 and len(losses["Validation"]) == 2
    assert np.isfinite(losses["Training"]).all() and np.isfinite(losses["Validation"]).all()
    assert cbs[0].get_results()["loss"] == pytest.approx(losses["Validation"][-1])
    with Image.open(tmp_path / "fit.gif") as im:
        assert im.n_frames >= 2
    assert {round(float(p.smooth), 6) for d in vol.get_detectors() for p in d.panels} == {0.05}
    for d in vol.get_detectors():
        xy = torch.stack([p.xy.detach() for p in d.panels])
        assert torch.allclose(xy, xy[:1].expand_as(xy))
    assert len(cbs[4].get_record()) > 0
    h = Save2HDF5PredHandler(tmp_path / "preds.h5", overwrite=True)
    assert w.predict([layout(0.05), layout(0.2)], n_mu_per_volume=100, mu_bs=100, pred_cb=h) == []
    with h5py.File(tmp_path / "preds.h5", "r") as f:
        assert f["preds"].shape == (2, 3, 5, 5) and np.allclose(f["targs"][1], 0.2)
