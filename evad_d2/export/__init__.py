"""Deployment: EVAD as a TorchScript graph or ExportedProgram that runs with torch and torchvision
alone, or as an ONNX graph for ONNX Runtime."""
from .exporter import EXPORT_FORMATS, ExportableEVAD, export_evad, load_exported, make_graph
from .onnx_export import MIN_ONNX_OPSET, ONNX_OPSET, OnnxRuntimeGraph, check_onnx_exportable, onnxruntime_providers

__all__ = [
    "EXPORT_FORMATS",
    "ExportableEVAD",
    "MIN_ONNX_OPSET",
    "ONNX_OPSET",
    "OnnxRuntimeGraph",
    "check_onnx_exportable",
    "export_evad",
    "load_exported",
    "make_graph",
    "onnxruntime_providers",
]
