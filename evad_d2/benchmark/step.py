"""One training step of the whole detector on a fixed synthetic batch (what the training
benchmark times and the memory probe measures)."""
from typing import Callable, List, Sequence, Tuple

import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from evad_d2.engine import autocast_for, build_optimizer
from evad_d2.modeling.backbone import scaled_keep_rates

from .inference import config_for_model
from .timing import BenchmarkSettings


def synthetic_training_batch(batch_size: int, size: Sequence[int], num_classes: int, device) -> List[dict]:
    """Fixed clips (3, T, H, W) in [0, 255] with two ground-truth actors each (the mapper's output)."""
    t, h, w = size
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    batch = []
    for i in range(batch_size):
        inst = Instances((h, w))
        inst.gt_boxes = Boxes((torch.tensor([[0.10, 0.15, 0.45, 0.90], [0.50, 0.20, 0.90, 0.95]]) * scale).to(device))
        actions = torch.zeros(2, num_classes)
        actions[0, i % num_classes] = 1.0
        actions[1, (i + 1) % num_classes] = 1.0
        actions[1, (i + 2) % num_classes] = 1.0  # multi-label, as AVA's
        inst.gt_actions = actions.to(device)
        clip = (torch.rand(3, t, h, w, generator=g) * 255).to(device)
        batch.append({"clip": clip, "height": h, "width": w, "instances": inst})
    return batch


def build_training(cfg, settings: BenchmarkSettings, source: str = "the config") -> Tuple[torch.nn.Module, List[dict], Callable[[float], None]]:
    """``(model in train mode, batch, step)``; ``step(rho)`` sets keep rate ``rho`` and runs
    forward, losses, backward and the optimizer step in detectron2's SimpleTrainer order (with a
    GradScaler for fp16). The batch is :func:`synthetic_training_batch` of ``settings.clip_size``
    (the mapper's output size: no resizing). ``source`` names the config in errors."""
    device = torch.device(settings.device)
    cfg = config_for_model(cfg, settings, source)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    size = settings.clip_size(cfg)
    batch = synthetic_training_batch(settings.batch_size, size, cfg.MODEL.EVAD.NUM_ACTION_CLASSES, device)
    scaler = torch.amp.GradScaler(device.type) if settings.dtype == "fp16" else None
    base = list(cfg.MODEL.EVAD.KEEP_RATES)

    def step(rho):
        model.set_keep_rates(scaled_keep_rates(base, rho))
        with autocast_for(device, settings.dtype):
            losses = model(batch)
        loss = sum(losses.values())
        optimizer.zero_grad()
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return model, batch, step
