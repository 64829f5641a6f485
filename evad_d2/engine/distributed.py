"""Multi-process training on CUDA (NCCL) and on the CPU (gloo), as detectron2's ``launch`` starts it."""
import torch
import torch.distributed as dist
from detectron2.engine import create_ddp_model as _d2_create_ddp_model
from detectron2.utils import comm

__all__ = ["check_backend_for_device", "create_ddp_model"]


def create_ddp_model(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel when there are several processes.

    detectron2's ``create_ddp_model`` passes ``device_ids=[local rank]``, which DDP rejects for a
    module on the CPU ("device_ids can only be None or contain a single element" / "... must be a
    CUDA module"); a CPU module gets ``device_ids=None`` (DDP's form for CPU modules) instead.
    ``kwargs`` go to DistributedDataParallel.
    """
    if comm.get_world_size() == 1:
        return model
    device = next(model.parameters()).device
    if device.type != "cuda":
        kwargs.setdefault("device_ids", None)
    return _d2_create_ddp_model(model, **kwargs)


def check_backend_for_device(device: str) -> None:
    """Refuse a CPU model under NCCL: detectron2's ``launch`` picks NCCL whenever a GPU is visible,
    and NCCL cannot reduce CPU tensors. A no-op in a single process."""
    if comm.get_world_size() == 1 or not device.startswith("cpu"):
        return
    backend = dist.get_backend()
    if backend != "gloo":
        raise RuntimeError(
            f"MODEL.DEVICE {device!r} with {comm.get_world_size()} processes needs the gloo backend, but detectron2's "
            f"launch started {backend!r} because a GPU is visible: hide the GPUs (CUDA_VISIBLE_DEVICES=) to train on the CPU"
        )
