"""The keyframe-centric token-pruning video ViT (paper 3.2, appendix A), VideoMAE layout.

Parameter names follow VideoMAE (``patch_embed.proj``, ``blocks.{i}.attn.qkv``/``q_bias``/``v_bias``,
``blocks.{i}.mlp.fc1``, ``norm``), so its checkpoints load by name.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.utils.checkpoint as cp
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from ...data.video import resolve_keyframe_index
from .attention import PruningAttention
from .pos_embed import resize_pos_table, sinusoid_table
from .pruning import PRUNING_SCORES, keyframe_first_order, num_kept_tokens, random_scores, select_tokens

__all__ = ["PruningBlock", "PruningVideoViT", "scaled_keep_rates", "validate_keep_rates", "vit_layer_id"]


def validate_keep_rates(keep_rates: Sequence[float], depth: int, key: str = "MODEL.EVAD.KEEP_RATES") -> List[float]:
    """Check a per-block keep-rate list: one value per block, each in (0, 1]."""
    keep_rates = [float(r) for r in keep_rates]
    if len(keep_rates) != depth:
        raise ValueError(f"{key} needs one keep rate per encoder block ({depth}), got {len(keep_rates)}: {keep_rates}")
    for i, r in enumerate(keep_rates):
        if not 0.0 < r <= 1.0:
            raise ValueError(f"{key}[{i}] = {r} is outside (0, 1]")
    return keep_rates


def scaled_keep_rates(base: Sequence[float], rho: float) -> List[float]:
    """Give every pruning block of ``base`` (keep rate < 1) the keep rate ``rho``; others keep 1.

    Used to sweep keep rates over a config's pruning layers (paper Table 2, Fig. 5).
    """
    if not any(r < 1.0 for r in base):
        raise ValueError("the config prunes nowhere (all MODEL.EVAD.KEEP_RATES are 1); give it pruning layers")
    return [rho if r < 1.0 else 1.0 for r in base]


def vit_layer_id(name: str, num_layers: int) -> int:
    """Layer id of a ViT parameter for layer-wise lr decay: 0 the embeddings, ``i + 1`` block ``i``,
    ``num_layers + 1`` the rest (the final norm).

    Names are relative to the ViT (``blocks.3.attn.qkv.weight``).
    """
    if name.startswith(("patch_embed", "pos_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


class PruningBlock(nn.Module):
    """A ViT block that, with keep rate < 1, prunes between the attention and the FFN."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float, importance_impl: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PruningAttention(dim, num_heads, qkv_bias, importance_impl)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(
        self, x: Tensor, index: Tensor, keep_rate: float, num_keyframe: int, keyframe_weight: float,
        scores: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """
        Args:
            x: (B, N, C) tokens, keyframe tokens first; index: (B, N) their grid positions.
            scores: (B, N - N1) scores to rank the non-keyframe tokens by instead of eq. 3 (the
                random rule); None: eq. 3 from this block's attention.

        Returns:
            (B, N', C) tokens and (B, N') positions, N' = ceil(keep_rate * N) when pruning.
        """
        prune = keep_rate < 1.0
        by_attention = prune and scores is None
        out, importance = self.attn(self.norm1(x), num_keyframe if by_attention else None, keyframe_weight)
        x = x + self.drop_path(out)
        if prune and not by_attention:
            importance = scores
        if prune:
            x, index = select_tokens(x, index, importance, num_keyframe, num_kept_tokens(int(x.shape[1]), keep_rate))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, index


@BACKBONE_REGISTRY.register()
class PruningVideoViT(Backbone):
    """Plain video ViT (joint space-time attention) with keyframe-centric token pruning.

    Input (B, 3, T, H, W) with T a multiple of the tubelet size and H, W multiples of the patch
    size. Output dict:

    * ``"layer{i}"`` for each ``i`` in ``feature_layers``: (B, C, H/16, W/16) keyframe tokens after
      block ``i`` (0-based; before the final norm), at stride 16;
    * ``"tokens"``: (B, M, C) surviving tokens after the final norm, keyframe tokens first;
    * ``"token_index"``: (B, M) their flat positions in the (T/2, H/16, W/16) grid.

    With ``pruning_score="random"`` the pruning blocks keep the keyframe tokens and a uniformly
    random subset of the others (as many as eq. 3 would keep). In training the draws come from
    torch's global random stream; in eval from the ViT's own stream, seeded with ``random_seed``
    anew whenever the ViT enters eval mode (``model.eval()``, as every detectron2 evaluation does
    first): an evaluation repeats exactly, and consecutive clips still get different draws.
    """

    @configurable
    def __init__(
        self,
        *,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        patch_size: int = 16,
        tubelet_size: int = 2,
        drop_path_rate: float = 0.0,
        learnable_pos_embed: bool = False,
        pretrain_img_size: int = 224,
        pretrain_num_frames: int = 16,
        keep_rates: Optional[Sequence[float]] = None,
        keyframe_weight: float = 1.0,
        keyframe_frame: Optional[int] = None,
        feature_layers: Sequence[int] = (2, 5, 8, 11),
        use_checkpoint: bool = False,
        importance_impl: str = "auto",
        pruning_score: str = "attention",
        random_seed: int = 0,
    ):
        """
        Args:
            keep_rates: keep rate per block (None: no pruning).
            keyframe_weight: w_kf of eq. 3.
            keyframe_frame: index of the keyframe among the input frames (None or negative: the
                middle one, as ``INPUT.KEYFRAME_INDEX = -1``; see ``resolve_keyframe_index``); its
                tubelet's token slice is the keyframe slice.
            feature_layers: 0-based blocks whose keyframe tokens are returned as maps.
            pretrain_img_size, pretrain_num_frames: grid the position table is defined on; other
                input sizes interpolate it.
            use_checkpoint: activation checkpointing of every block during training.
            importance_impl: how pruning blocks compute importance (see ``attention.IMPORTANCE_IMPLS``).
            pruning_score: how pruning blocks rank the non-keyframe tokens, one of
                ``pruning.PRUNING_SCORES``: ``"attention"`` (eq. 3) or ``"random"``.
            random_seed: seed of the random rule's eval stream.
        """
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.keyframe_weight = float(keyframe_weight)
        self.keyframe_frame = keyframe_frame
        self.use_checkpoint = use_checkpoint
        self.random_seed = int(random_seed)
        self.set_pruning_score(pruning_score)
        self.set_keep_rates([1.0] * depth if keep_rates is None else keep_rates, depth)
        for i in feature_layers:
            if not 0 <= i < depth:
                raise ValueError(f"feature layer {i} outside the {depth} blocks")
        self.feature_layers = list(feature_layers)

        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(
            in_chans, embed_dim, kernel_size=(tubelet_size, patch_size, patch_size), stride=(tubelet_size, patch_size, patch_size)
        )
        side = pretrain_img_size // patch_size
        self.pretrain_grid = (pretrain_num_frames // tubelet_size, side, side)
        table = sinusoid_table(math.prod(self.pretrain_grid), embed_dim)
        if learnable_pos_embed:
            self.pos_embed = nn.Parameter(table.unsqueeze(0))
        else:
            # A fixed function of the grid: not a checkpoint entry (as in the official release).
            self.register_buffer("pos_embed", table.unsqueeze(0), persistent=False)

        # Stochastic depth grows linearly over the blocks (plain floats: builds on the meta device too).
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            PruningBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, dpr[i], importance_impl) for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

        self._out_features = [f"layer{i}" for i in self.feature_layers]
        self._out_feature_channels = {f: embed_dim for f in self._out_features}
        self._out_feature_strides = {f: patch_size for f in self._out_features}
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        e = cfg.MODEL.EVAD
        return {
            "in_chans": input_shape.channels if input_shape is not None else 3,
            "embed_dim": e.EMBED_DIM,
            "depth": e.DEPTH,
            "num_heads": e.NUM_HEADS,
            "mlp_ratio": e.MLP_RATIO,
            "qkv_bias": e.QKV_BIAS,
            "patch_size": e.PATCH_SIZE,
            "tubelet_size": e.TUBELET_SIZE,
            "drop_path_rate": e.DROP_PATH_RATE,
            "learnable_pos_embed": e.LEARNABLE_POS_EMBED,
            "pretrain_img_size": e.PRETRAIN_IMG_SIZE,
            "pretrain_num_frames": cfg.INPUT.NUM_FRAMES,
            "keep_rates": validate_keep_rates(e.KEEP_RATES, e.DEPTH),
            "keyframe_weight": e.KEYFRAME_WEIGHT,
            "keyframe_frame": cfg.INPUT.KEYFRAME_INDEX,
            "feature_layers": e.FEATURE_LAYERS,
            "use_checkpoint": e.USE_CHECKPOINT,
            "importance_impl": e.IMPORTANCE_IMPL,
            "pruning_score": e.PRUNING_SCORE,
        }

    def set_keep_rates(self, keep_rates: Sequence[float], depth: Optional[int] = None) -> None:
        """Change the keep rates, e.g. at inference without retraining (paper Fig. 5)."""
        depth = len(self.blocks) if depth is None else depth
        self.keep_rates = validate_keep_rates(keep_rates, depth, key="keep_rates")

    def set_pruning_score(self, pruning_score: str) -> None:
        """Change how the pruning blocks rank the non-keyframe tokens (one of ``PRUNING_SCORES``);
        restarts the random rule's eval stream."""
        if pruning_score not in PRUNING_SCORES:
            raise ValueError(f"pruning_score must be one of {PRUNING_SCORES}, got {pruning_score!r}")
        self.pruning_score = pruning_score
        self._eval_generator: Optional[torch.Generator] = None

    def train(self, mode: bool = True):
        """Also restarts the random rule's eval stream on entering eval mode (see the class doc)."""
        if not mode:
            self._eval_generator = None
        return super().train(mode)

    def _random_scores(self, batch: int, num_scores: int, device) -> Tensor:
        """(B, num_scores) scores of the random rule: the global stream in training, else the eval stream."""
        generator = None
        if not self.training:
            if self._eval_generator is None or self._eval_generator.device != device:
                self._eval_generator = torch.Generator(device=device).manual_seed(self.random_seed)
            generator = self._eval_generator
        return random_scores(batch, num_scores, device=device, generator=generator)

    @property
    def size_divisibility(self) -> int:
        return self.patch_size

    @property
    def num_layers(self) -> int:
        """Number of blocks."""
        return len(self.blocks)

    def layer_id(self, name: str) -> int:
        """:func:`vit_layer_id` of parameter ``name`` (relative to this ViT)."""
        return vit_layer_id(name, self.num_layers)

    def token_grid(self, clip_shape: Sequence[int]) -> Tuple[int, int, int]:
        """(T', H', W') token grid of a (..., T, H, W) clip; raises on sizes that do not tile."""
        t, h, w = clip_shape[-3:]
        if t % self.tubelet_size or h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"clip of size T={t}, H={h}, W={w} does not tile into {self.tubelet_size}x{self.patch_size}x{self.patch_size} "
                f"cubes: T must be a multiple of {self.tubelet_size} and H, W multiples of {self.patch_size}"
            )
        return t // self.tubelet_size, h // self.patch_size, w // self.patch_size

    def keyframe_slice(self, num_frames: int) -> int:
        """Temporal token slice of the keyframe in a clip of ``num_frames`` frames."""
        frame = resolve_keyframe_index(-1 if self.keyframe_frame is None else self.keyframe_frame, num_frames)
        return frame // self.tubelet_size

    def token_counts(self, clip_shape: Sequence[int]) -> List[int]:
        """Number of tokens leaving each block for a clip of this size (no forward needed)."""
        t, h, w = self.token_grid(clip_shape)
        n = t * h * w
        counts = []
        for r in self.keep_rates:
            if r < 1.0:
                n = min(max(num_kept_tokens(n, r), h * w), n)
            counts.append(n)
        return counts

    def position_embedding(self, grid: Tuple[int, int, int]) -> Tensor:
        """(1, T'*H'*W', C) position table for a token grid."""
        return resize_pos_table(self.pos_embed[0], self.pretrain_grid, grid).unsqueeze(0)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        if x.dim() != 5:
            raise ValueError(f"expected a clip batch (B, C, T, H, W), got shape {tuple(x.shape)}")
        grid = self.token_grid(x.shape)
        kf_slice = self.keyframe_slice(x.shape[2])
        n1 = grid[1] * grid[2]

        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, N, C) in (t, h, w) order
        x = x + self.position_embedding(grid).to(x.dtype)
        order = keyframe_first_order(grid, kf_slice, device=x.device)
        x = x[:, order]
        index = order.unsqueeze(0).expand(x.shape[0], -1)

        outputs = {}
        for i, blk in enumerate(self.blocks):
            scores = None
            if self.pruning_score == "random" and self.keep_rates[i] < 1.0:
                scores = self._random_scores(x.shape[0], x.shape[1] - n1, x.device)
            args = (x, index, self.keep_rates[i], n1, self.keyframe_weight, scores)
            if self.use_checkpoint and self.training:
                x, index = cp.checkpoint(blk, *args, use_reentrant=False)
            else:
                x, index = blk(*args)
            if i in self.feature_layers:
                kf = x[:, :n1].transpose(1, 2).reshape(x.shape[0], -1, grid[1], grid[2])
                outputs[f"layer{i}"] = kf
        outputs["tokens"] = self.norm(x)
        outputs["token_index"] = index
        return outputs

