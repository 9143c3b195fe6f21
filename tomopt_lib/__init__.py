"""tomopt_lib: differentiable muon-tomography detector design in pure torch (TomOpt-compatible API).

Subpackages: ``muon`` (flux generators, ``MuonBatch``), ``volume`` (layers, panels, scattering models, ``Volume``),
``inference`` (``ScatterBatch``), ``optimisation.data`` (passive generators), plus ``core`` (constants),
``runtime`` (device / dtype / threads / seeds), ``io`` (HDF5 / Parquet), ``plotting``, ``utils`` and ``version``.

TomOpt scripts port by replacing ``tomopt`` with ``tomopt_lib`` in their imports: every documented module path
exists, and the subpackages re-export the public names of their modules as TomOpt's do (see the README).
"""

from .version import __version__

__all__ = ["__version__"]
