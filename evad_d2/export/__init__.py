"""Deployment: EVAD as a TorchScript graph or ExportedProgram that runs with torch and torchvision alone."""
from .exporter import EXPORT_FORMATS, ExportableEVAD, export_evad, load_exported, make_graph

__all__ = ["EXPORT_FORMATS", "ExportableEVAD", "export_evad", "load_exported", "make_graph"]
