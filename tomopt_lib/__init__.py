"""tomopt_lib: differentiable muon-tomography detector design in pure torch (TomOpt-compatible API).

Subpackages: ``muon`` (flux generators, ``MuonBatch``), ``volume`` (layers, panels, scattering models, ``Volume``),
``inference`` (``ScatterBatch``), ``optimisation.data`` (passive generators), plus ``core`` (constants),
``runtime`` (device / dtype / threads / seeds), ``io`` (HDF5 / Parquet) and ``plotting``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
