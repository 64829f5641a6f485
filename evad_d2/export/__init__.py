"""Deployment: EVAD as a TorchScript graph that runs with torch and torchvision alone."""
from .torchscript import TracedEVAD, export_torchscript, load_exported

__all__ = ["TracedEVAD", "export_torchscript", "load_exported"]
