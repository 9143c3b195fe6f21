"""Muons: cosmic-ray flux generators and the ``MuonBatch`` state container."""

from .generation import AbsMuonGenerator, MuonGenerator2015, MuonGenerator2016
from .muon_batch import MuonBatch

__all__ = ["AbsMuonGenerator", "MuonGenerator2015", "MuonGenerator2016", "MuonBatch"]
