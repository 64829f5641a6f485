"""Action classification heads (paper 3.3): the context refinement decoder and the linear baseline.

Both restore the pruned token sequence to a (T', H', W') map, pool one feature per actor with the
3D RoIAlign on extended keyframe boxes and classify it. The decoder additionally lets the actor
features attend to the surviving tokens before classifying (with a classifier after every layer,
for intermediate supervision).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.utils.registry import Registry
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from ..backbone.attention import PruningAttention
from ..backbone.pos_embed import resize_pos_table, sinusoid_table
from ..backbone.pruning import restore_token_map
from ..poolers import ROIPooler3D

__all__ = [
    "ACTION_HEAD_REGISTRY",
    "ACTION_HEAD_SHORT_NAMES",
    "ActionClassifier",
    "ContextRefinementHead",
    "DecoderBlock",
    "LinearActionHead",
    "actor_pooler_from_config",
    "build_action_head",
]

ACTION_HEAD_REGISTRY = Registry("ACTION_HEAD")
ACTION_HEAD_REGISTRY.__doc__ = """
Registry for action heads, which classify the actions of each actor box from the encoder tokens.

The head named by ``MODEL.EVAD.ACTION_HEAD`` (a registered name, or one of
:data:`ACTION_HEAD_SHORT_NAMES`) is built with ``obj(cfg)`` and called as
``head(tokens, token_index, grid, boxes, image_sizes)`` with

* tokens: (B, M, MODEL.EVAD.EMBED_DIM) surviving encoder tokens (after the final norm), keyframe
  first (the backbone's ``BackboneOutput.tokens``, see ``modeling/backbone/contract.py``);
* token_index: (B, M) long, flat position of each token in the (T', H', W') token grid
  (``BackboneOutput.token_index``);
* grid: (T', H', W') token grid of the (padded) clip (``BackboneOutput.token_grid``);
* boxes: (B, n, 4) absolute XYXY keyframe boxes (the localization head's last stage, detached);
* image_sizes: (B, 2) float unpadded (h, w) of each clip.

It must return a non-empty list of (B, n, MODEL.EVAD.NUM_ACTION_CLASSES) action logits, the final
ones last (earlier entries are deeply supervised with MODEL.EVAD.LOSS.DEEP_SUPERVISION). The
built-in heads pool one feature per actor with a ``modeling.poolers.ROIPooler3D``.
"""

# MODEL.EVAD.ACTION_HEAD's names for the built-in heads (those of the paper's Table 1a).
ACTION_HEAD_SHORT_NAMES = {"decoder": "ContextRefinementHead", "linear": "LinearActionHead"}


class DecoderBlock(nn.Module):
    """Pre-norm ViT block in VideoMAE's layout (q/v biases, LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PruningAttention(dim, num_heads, qkv_bias=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x))[0])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ActionClassifier(nn.Module):
    """Linear (no bias) -> LayerNorm -> ReLU -> Linear to per-class logits."""

    def __init__(self, dim: int, hidden_dim: int, num_classes: int):
        super().__init__()
        self.act_module = nn.Sequential(
            nn.Linear(dim, hidden_dim, bias=False), nn.LayerNorm(hidden_dim), nn.ReLU(inplace=True)
        )
        self.action_logits = nn.Linear(hidden_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.action_logits(self.act_module(x))


def _xavier_linear_init(module: nn.Module) -> None:
    # Newly added layers get Xavier weights (paper appendix A) and zero biases.
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, PruningAttention) and m.q_bias is not None:
            nn.init.zeros_(m.q_bias)
            nn.init.zeros_(m.v_bias)


def _check_inputs(tokens: Tensor, token_index: Tensor, grid: Sequence[int], boxes: Tensor, image_sizes: Tensor):
    b, m, _ = tokens.shape
    if token_index.shape != (b, m):
        raise ValueError(f"token_index {tuple(token_index.shape)} does not match tokens {tuple(tokens.shape)}")
    if len(grid) != 3:
        raise ValueError(f"grid must be (T', H', W'), got {grid!r}")
    if boxes.dim() != 3 or boxes.shape[0] != b or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be ({b}, n, 4), got {tuple(boxes.shape)}")
    if image_sizes.shape != (b, 2):
        raise ValueError(f"image_sizes must be ({b}, 2), got {tuple(image_sizes.shape)}")


def actor_pooler_from_config(keys, patch_size: int) -> ROIPooler3D:
    """An action head's 3D RoIAlign from its config node ``keys`` (``MODEL.EVAD.DECODER`` or
    ``MODEL.EVAD.LINEAR_HEAD``: ``ROI_EXTEND``, ``POOLER_RESOLUTION``, ``POOLER_SAMPLING_RATIO``), on
    the token map at stride ``patch_size`` (``MODEL.EVAD.PATCH_SIZE``)."""
    return ROIPooler3D(
        keys.POOLER_RESOLUTION,
        stride=patch_size,
        sampling_ratio=keys.POOLER_SAMPLING_RATIO,
        roi_extend=tuple(keys.ROI_EXTEND),
    )


def official_token_positions(token_index: Tensor, num_keyframe: int) -> Tensor:
    """The positions the official implementation effectively assigns to the tokens.

    It writes the non-keyframe tokens (which arrive in top-k score order) into the kept positions
    in ascending position order, and adds position embeddings in that order too, so the i-th
    non-keyframe token is treated as sitting at the i-th smallest kept position. The first
    ``num_keyframe`` tokens (the keyframe, in raster order) are unaffected.

    Args:
        token_index: (B, M) true grid positions, keyframe tokens first.
        num_keyframe: number of leading keyframe tokens (H' * W').

    Returns:
        (B, M) positions.
    """
    key, rest = token_index[:, :num_keyframe], token_index[:, num_keyframe:]
    return torch.cat([key, rest.sort(dim=1).values], dim=1)


@ACTION_HEAD_REGISTRY.register()
class ContextRefinementHead(nn.Module):
    """The context refinement decoder (CRD) with per-layer action classifiers."""

    @configurable
    def __init__(
        self,
        *,
        in_dim: int = 768,
        dim: int = 384,
        depth: int = 6,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        num_classes: int = 80,
        pooler: Optional[ROIPooler3D] = None,
        cls_hidden_dim: int = 2048,
        drop_path_rate: float = 0.0,
        official_token_order: bool = False,
        pretrain_token_grid: Tuple[int, int] = (14, 14),
    ):
        """
        Args:
            in_dim: width of the encoder tokens.
            dim, depth, num_heads, mlp_ratio: decoder width, blocks, heads, FFN ratio.
            num_classes: action classes.
            pooler: the 3D RoIAlign with RoI extension on the restored token map (default:
                ``ROIPooler3D()``, the paper's settings at stride 16).
            cls_hidden_dim: hidden width of each per-layer classifier.
            drop_path_rate: stochastic depth at the last block (linear from 0).
            official_token_order: place non-keyframe tokens as the official code does (a bug kept
                only for converted official checkpoints; see :func:`official_token_positions`).
            pretrain_token_grid: spatial (H', W') grid the position table is defined on; other grids
                resize it bicubically per temporal slice, as the official code does.
        """
        super().__init__()
        self.dim = dim
        self.num_classes = num_classes
        self.pooler = ROIPooler3D() if pooler is None else pooler
        self.official_token_order = bool(official_token_order)
        self.pretrain_token_grid = tuple(int(g) for g in pretrain_token_grid)
        self._pos_cache: Dict[Tuple[Tuple[int, int, int], str], Tensor] = {}

        self.encoder_to_decoder = nn.Linear(in_dim, dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList([DecoderBlock(dim, num_heads, mlp_ratio, r) for r in rates])
        self.classifiers = nn.ModuleList(
            [ActionClassifier(dim, cls_hidden_dim, num_classes) for _ in range(depth)]
        )
        _xavier_linear_init(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    @classmethod
    def from_config(cls, cfg):
        e, d = cfg.MODEL.EVAD, cfg.MODEL.EVAD.DECODER
        grid = e.PRETRAIN_IMG_SIZE // e.PATCH_SIZE
        return {
            "in_dim": e.EMBED_DIM,
            "dim": d.DIM,
            "depth": d.DEPTH,
            "num_heads": d.NUM_HEADS,
            "mlp_ratio": d.MLP_RATIO,
            "num_classes": e.NUM_ACTION_CLASSES,
            "pooler": actor_pooler_from_config(d, e.PATCH_SIZE),
            "cls_hidden_dim": d.CLS_HIDDEN_DIM,
            "drop_path_rate": d.DROP_PATH_RATE,
            "official_token_order": d.OFFICIAL_TOKEN_ORDER,
            "pretrain_token_grid": (grid, grid),
        }

    def position_table(self, grid: Sequence[int], device=None) -> Tensor:
        """(T'*H'*W', dim) fixed float32 sin-cos table for a token grid (cached per grid and device)."""
        grid = tuple(int(g) for g in grid)
        device = torch.device(device or "cpu")
        key = (grid, str(device))
        if key in self._pos_cache:
            return self._pos_cache[key]
        src = (grid[0],) + self.pretrain_token_grid
        table = resize_pos_table(sinusoid_table(src[0] * src[1] * src[2], self.dim), src, grid).to(device)
        # Under torch.export the table is a fake tensor of the export, which must not outlive it.
        if not torch.compiler.is_exporting():
            self._pos_cache[key] = table
        return table

    def forward(
        self,
        tokens: Tensor,
        token_index: Tensor,
        grid: Sequence[int],
        boxes: Tensor,
        image_sizes: Tensor,
    ) -> List[Tensor]:
        """
        Args:
            tokens: (B, M, in_dim) surviving encoder tokens (after the final norm), keyframe first.
            token_index: (B, M) long, flat position of each token in the (T', H', W') grid.
            grid: (T', H', W') token grid of the (padded) clip.
            boxes: (B, n, 4) absolute XYXY keyframe boxes (the last localization stage, detached).
            image_sizes: (B, 2) unpadded (h, w); extended boxes are clipped to it.

        Returns:
            One (B, n, num_classes) logit tensor per decoder layer, the last layer's last.
        """
        _check_inputs(tokens, token_index, grid, boxes, image_sizes)
        t, h, w = grid
        x = self.encoder_to_decoder(tokens)
        index = token_index
        if self.official_token_order:
            index = official_token_positions(token_index, h * w)
        pos = self.position_table(grid, x.device).to(x.dtype)  # (N, dim)

        # RoI features come from the full map: projected tokens, the mask token where tokens were
        # dropped, and the position embedding everywhere.
        feature_map = restore_token_map(x, index, grid, fill=self.mask_token)
        feature_map = feature_map + pos.t().reshape(1, self.dim, t, h, w)
        actors = self.pooler(feature_map, boxes, image_sizes)

        num_tokens = x.shape[1]
        x = torch.cat([x + pos[index], actors], dim=1)
        logits = []
        for block, classifier in zip(self.blocks, self.classifiers):
            x = block(x)
            logits.append(classifier(x[:, num_tokens:]))
        return logits


@ACTION_HEAD_REGISTRY.register()
class LinearActionHead(nn.Module):
    """The paper's Table 1a "linear" baseline: a linear classifier on the 3D RoIAlign features."""

    @configurable
    def __init__(
        self,
        *,
        in_dim: int = 768,
        num_classes: int = 80,
        pooler: Optional[ROIPooler3D] = None,
    ):
        """
        Args:
            in_dim: width of the encoder tokens.
            num_classes: action classes.
            pooler: the 3D RoIAlign with RoI extension (default: ``ROIPooler3D()``).
        """
        super().__init__()
        self.num_classes = num_classes
        self.pooler = ROIPooler3D() if pooler is None else pooler
        self.action_logits = nn.Linear(in_dim, num_classes)
        _xavier_linear_init(self)

    @classmethod
    def from_config(cls, cfg):
        return {
            "in_dim": cfg.MODEL.EVAD.EMBED_DIM,
            "num_classes": cfg.MODEL.EVAD.NUM_ACTION_CLASSES,
            "pooler": actor_pooler_from_config(cfg.MODEL.EVAD.LINEAR_HEAD, cfg.MODEL.EVAD.PATCH_SIZE),
        }

    def forward(
        self,
        tokens: Tensor,
        token_index: Tensor,
        grid: Sequence[int],
        boxes: Tensor,
        image_sizes: Tensor,
    ) -> List[Tensor]:
        """Same arguments as :meth:`ContextRefinementHead.forward`; returns a one-element list."""
        _check_inputs(tokens, token_index, grid, boxes, image_sizes)
        feature_map = restore_token_map(tokens, token_index, grid)  # zeros where dropped
        actors = self.pooler(feature_map, boxes, image_sizes)
        return [self.action_logits(actors)]


def build_action_head(cfg) -> nn.Module:
    """The action head named by ``MODEL.EVAD.ACTION_HEAD``: a name in :data:`ACTION_HEAD_REGISTRY`
    or one of :data:`ACTION_HEAD_SHORT_NAMES` ("decoder", "linear")."""
    name = cfg.MODEL.EVAD.ACTION_HEAD
    name = ACTION_HEAD_SHORT_NAMES.get(name, name)
    if name not in ACTION_HEAD_REGISTRY:
        registered = sorted(n for n, _ in ACTION_HEAD_REGISTRY)
        raise ValueError(
            f"MODEL.EVAD.ACTION_HEAD = {cfg.MODEL.EVAD.ACTION_HEAD!r} is neither one of "
            f"{list(ACTION_HEAD_SHORT_NAMES)} nor a name in ACTION_HEAD_REGISTRY {registered}"
        )
    return ACTION_HEAD_REGISTRY.get(name)(cfg)
