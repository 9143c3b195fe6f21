"""A TomOpt-style script (Hello-World layout, keyword names of the TomOpt API) runs here with only the imports changed."""

import torch
from torch import Tensor, nn

from tomopt_lib.core import X0
from tomopt_lib.inference import ScatterBatch
from tomopt_lib.muon import MuonBatch, MuonGenerator2016
from tomopt_lib.optimisation.data import PassiveYielder, RandomBlockPassiveGenerator
from tomopt_lib.volume import DetectorPanel, PanelDetectorLayer, PassiveLayer, SigmoidDetectorPanel, Volume


def arb_rad_length(*, z: Tensor, lw: Tensor, size: float) -> Tensor:
    rad_length = torch.ones(list((lw / size).long())) * X0["beryllium"]
    if z < 0.5:
        rad_length[3:7, 3:7] = X0["lead"]
    return rad_length


def get_layers(panel_cls=DetectorPanel, **panel_kwargs) -> nn.ModuleList:
    layers = []
    lwh = Tensor([1, 1, 1])
    size = 0.1
    init_eff, init_res, n_panels = 0.9, 1e4, 4
    layers.append(
        PanelDetectorLayer(
            pos="above",
            lw=lwh[:2],
            z=1,
            size=2 * size,
            panels=[
                panel_cls(
                    res=init_res,
                    eff=init_eff,
                    init_xyz=[0.5, 0.5, 1 - i * (2 * size) / n_panels],
                    init_xy_span=[1.0, 1.0],
                    **panel_kwargs,
                )
                for i in range(n_panels)
            ],
        )
    )
    for z in [0.8, 0.7, 0.6, 0.5, 0.4, 0.3]:
        layers.append(PassiveLayer(rad_length_func=arb_rad_length, lw=lwh[:2], z=z, size=size))
    layers.append(
        PanelDetectorLayer(
            pos="below",
            lw=lwh[:2],
            z=0.2,
            size=2 * size,
            panels=[
                panel_cls(
                    res=init_res,
                    eff=init_eff,
                    init_xyz=[0.5, 0.5, 0.2 - i * (2 * size) / n_panels],
                    init_xy_span=[1.0, 1.0],
                    **panel_kwargs,
                )
                for i in range(n_panels)
            ],
        )
    )
    return nn.ModuleList(layers)


def test_hello_world_script_runs_with_changed_imports():
    torch.manual_seed(0)
    volume = Volume(get_layers())
    assert volume.get_rad_cube().shape == (6, 10, 10)
    assert volume.get_rad_cube()[0, 5, 5] == X0["lead"] and volume.get_rad_cube()[-1, 5, 5] == X0["beryllium"]
    gen = MuonGenerator2016.from_volume(volume)
    mu = MuonBatch(gen(2000), init_z=volume.h)
    volume(mu)
    hits = mu.get_hits()
    assert set(hits) == {"above", "below"}
    assert hits["above"]["reco_xyz"].shape == (len(mu), 4, 3)
    sb = ScatterBatch(mu=mu, volume=volume)
    assert sb.poca_xyz.shape[1] == 3 and sb.total_scatter.shape[1] == 1
    # scatters in the lead (bottom layers, centre) are larger than in the beryllium above
    inside = sb.get_scatter_mask()
    poca, scat = sb.poca_xyz[inside].detach(), sb.total_scatter[inside, 0].detach()
    centre = ((poca[:, :2] > 0.3) & (poca[:, :2] < 0.7)).all(1)
    lead = centre & (poca[:, 2] < 0.4)
    beryllium = poca[:, 2] > 0.6
    assert scat[lead].median() > 2 * scat[beryllium].median()
    loss = sb.total_scatter_unc.sum() + sb.poca_xyz_unc.sum()
    loss.backward()
    for panel in volume.get_detectors()[0].panels:
        assert torch.isfinite(panel.xy.grad).all() and panel.xy.grad.abs().sum() > 0


def test_sigmoid_panels_and_passive_generators_port():
    volume = Volume(get_layers(SigmoidDetectorPanel, smooth=0.5))
    gen = RandomBlockPassiveGenerator(volume=volume, block_size=(0.5, 0.5, 0.4), sort_x0=False, enforce_diff_mat=True)
    passives = PassiveYielder(gen, n_passives=3)
    for func, target in passives:
        volume.load_rad_length(func, target)
        cube = volume.get_rad_cube()
        known = torch.tensor(list(X0.values()))
        for x0 in cube.unique():
            assert torch.isclose(known, x0, rtol=1e-6).any()
        assert len(cube.unique()) == 2, "a block of another material than the background (enforce_diff_mat)"
        assert volume.target is not None and volume.target.shape == (1,)
        # the target is the block's X0: the value of the 5 x 5 x 4 voxels the 0.5 x 0.5 x 0.4 m block fills
        is_block = torch.isclose(cube, volume.target, rtol=1e-6)
        assert int(is_block.sum()) == 5 * 5 * 4
