"""POMNet's per-keypoint heatmap branch: keypoint BatchNorm, relation model, deconvolutions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.pomnet.config import POMNetHeadConfig

# --------------------------------------------------------------------------------------------
# Per-keypoint heatmap branch
# --------------------------------------------------------------------------------------------


class KeypointBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that can treat its batch as ``groups`` independent keypoint calls.

    The official head runs its relation/deconv branch once per keypoint, so in training mode each
    keypoint is normalised with its own batch statistics and the running statistics receive one
    momentum update per keypoint, in keypoint order. With ``groups > 1`` (input laid out
    keypoint-major, ``[G * B, C, H, W]``) this module reproduces that; in eval mode, or with
    ``groups == 1``, it is a plain ``BatchNorm2d``.
    """

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:  # type: ignore[override]
        """float32[G*B, C, H, W] -> same shape."""
        use_batch_stats = self.training or not self.track_running_stats
        if groups == 1 or not use_batch_stats:
            return super().forward(x)
        n, c, h, w = x.shape
        b = n // groups
        # each (keypoint group, channel) as a channel of its own: one native batch-norm pass (forward and backward)
        # instead of a hand-written one, 2-4x faster; momentum 1 leaves each group's batch mean and unbiased
        # variance in the two scratch buffers for the sequential running-statistics update below
        per_group = x.reshape(groups, b, c, h, w).transpose(0, 1).reshape(b, groups * c, h, w)
        mean, var = x.new_zeros(groups * c), x.new_ones(groups * c)
        weight = self.weight.repeat(groups) if self.affine else None
        bias = self.bias.repeat(groups) if self.affine else None
        y = F.batch_norm(per_group, mean, var, weight, bias, True, 1.0, self.eps)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                for g in range(groups):  # sequential EMA, as the per-keypoint loop does
                    self.num_batches_tracked.add_(1)
                    m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                    self.running_mean.mul_(1 - m).add_(mean[g * c : (g + 1) * c], alpha=m)
                    self.running_var.mul_(1 - m).add_(var[g * c : (g + 1) * c], alpha=m)
        return y.reshape(b, groups, c, h, w).transpose(0, 1).reshape(n, c, h, w)


class ConvModule(nn.Module):
    """mmcv ``ConvModule(conv3x3 without bias, BN, ReLU)`` as used by ``RelationModel``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn = KeypointBatchNorm2d(out_channels)

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:
        """float32[N, Cin, h, w] -> float32[N, Cout, h, w]."""
        return F.relu(self.bn(self.conv(x), groups), inplace=True)


class RelationModel(nn.Module):
    """``RelationModel`` (transformer_head.py): concat(memory, token broadcast) → ConvModule.

    The official module also owns an unused ``AdaptiveAvgPool2d`` (no parameters), omitted.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvModule(in_channels, out_channels)

    def forward(self, token: Tensor, memory: Tensor, groups: int = 1) -> Tensor:
        """Relation features.

        Args:
            token: float32[N, E] keypoint tokens.
            memory: float32[N, E, h, w] encoder memory (one per token).
            groups: keypoint groups in N (training-mode batch statistics).

        Returns:
            float32[N, E, h, w].
        """
        feature = torch.cat((memory, token[:, :, None, None].expand_as(memory)), dim=1)
        return self.conv(feature, groups)

    def forward_shared_memory(self, tokens: Tensor, memory: Tensor) -> Tensor:
        """:meth:`forward` in eval mode for every keypoint token of each query at once, without repeating the memory.

        The 3×3 conv over ``concat(memory, token broadcast)`` is linear, so it splits into the memory half, run
        once per query instead of once per keypoint, plus the token half: on a constant map with zero padding, a
        per-cell matrix (the sum of the taps that land inside the map) times the token. Equal to :meth:`forward`
        up to float rounding; training keeps :meth:`forward` (its batch statistics are per keypoint).

        Args:
            tokens: float32[Kc, B, E] keypoint tokens, keypoint-major.
            memory: float32[B, E, h, w] encoder memory of the B queries.

        Returns:
            float32[Kc * B, E, h, w], laid out as :meth:`forward` of the keypoint-major broadcast.
        """
        kc, b, e = tokens.shape
        h, w = memory.shape[-2:]
        weight = self.conv.conv.weight  # [Eout, 2E, 3, 3]: memory channels first, then the token's
        from_memory = F.conv2d(memory, weight[:, :e], padding=1)  # [B, Eout, h, w]
        taps_inside = F.unfold(memory.new_ones(1, 1, h, w), 3, padding=1)[0]  # [9, h*w]: tap t lands in the map
        per_cell = torch.einsum("oit,tp->ipo", weight[:, e:].flatten(2), taps_inside)  # [E, h*w, Eout]
        from_token = (tokens.reshape(kc * b, e) @ per_cell.reshape(e, -1)).view(kc, b, h, w, -1)  # one matmul
        out = (from_token.permute(0, 1, 4, 2, 3) + from_memory.unsqueeze(0)).reshape(kc * b, -1, h, w)
        return F.relu(self.conv.bn(out), inplace=True)


def _deconv_padding(kernel: int) -> tuple[int, int]:
    """(padding, output_padding) of ``TopdownHeatmapBaseHead._get_deconv_cfg``."""
    if kernel == 4:
        return 1, 0
    if kernel == 3:
        return 1, 1
    if kernel == 2:
        return 0, 0
    raise ValueError(f"unsupported deconv kernel {kernel}")


class DeconvLayers(nn.Sequential):
    """[ConvTranspose2d(no bias), BN, ReLU] × n, official indices ``0,1,2, 3,4,5, ...`` (its state-dict keys).

    In eval mode each BatchNorm is folded into its deconvolution (scale on the output channels of the weight,
    shift as its bias): the same affine map up to float rounding, one pass over each upsampled map fewer (the
    branch runs on every (query, keypoint) pair, so this is most of what POMNet's head costs at eval).
    """

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:  # type: ignore[override]
        """float32[G*B, C, h, w] -> float32[G*B, C', h * 2^n, w * 2^n]; ``groups``: keypoint groups (training)."""
        for deconv, bn, _ in zip(self[0::3], self[1::3], self[2::3], strict=True):
            if self.training or not bn.track_running_stats:
                x = F.relu(bn(deconv(x), groups), inplace=True)
                continue
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            x = F.conv_transpose2d(x, deconv.weight * scale[None, :, None, None], bn.bias - bn.running_mean * scale,
                                   deconv.stride, deconv.padding, deconv.output_padding)
            x = F.relu(x, inplace=True)
        return x


def make_deconv_layers(cfg: POMNetHeadConfig) -> DeconvLayers:
    """The branch's deconvolutions, :class:`DeconvLayers` of ``cfg.num_deconv_filters/kernels``."""
    layers: list[nn.Module] = []
    in_ch = cfg.embed_dims
    for planes, kernel in zip(cfg.num_deconv_filters, cfg.num_deconv_kernels):
        padding, output_padding = _deconv_padding(kernel)
        layers += [
            nn.ConvTranspose2d(in_ch, planes, kernel, stride=2, padding=padding,
                               output_padding=output_padding, bias=False),
            KeypointBatchNorm2d(planes),
            nn.ReLU(inplace=True),
        ]
        in_ch = planes
    return DeconvLayers(*layers)
