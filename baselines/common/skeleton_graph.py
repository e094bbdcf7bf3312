"""The skeleton graph of GraphCape's decoder: the two-kernel GCN layer, the normalised adjacency of a category's
skeleton (padded slots masked), and skeletons padded to a batch (official ``encoder_decoder.py``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class GCNLayer(nn.Module):
    """Two-kernel graph convolution (official ``GCNLayer``, ``encoder_decoder.py``).

    ``conv`` is a 1×1 Conv1d producing ``2 * out`` channels: rows ``[0, out)`` are the self
    kernel (aggregated with ``diag(valid)``), rows ``[out, 2 out)`` the neighbour kernel
    (aggregated with the row-normalised adjacency, contracted on its *first* index, so node
    ``w`` receives ``x_v / deg(v)``: spec §9 quirk 6). ReLU after aggregation.

    Args:
        in_features: input width.
        out_features: output width.
        kernel_size: number of adjacency channels (2).
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 2):
        super().__init__()
        self.conv = nn.Conv1d(in_features, out_features * kernel_size, kernel_size=1)
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Args: x float32[K, B, C_in]; adj float32[B, 2, K, K]. Returns float32[K, B, C_out]."""
        y = self.conv(x.permute(1, 2, 0))  # [B, 2*C_out, K]
        b, kc, v = y.shape
        y = y.view(b, self.kernel_size, kc // self.kernel_size, v)
        y = torch.einsum("bkcv,bkvw->bcw", y, adj)
        return F.relu(y).permute(2, 0, 1)


def skeleton_adjacency(num_pts: int, edges: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
    """Two-channel adjacency of the support skeleton (official ``adj_from_skeleton``), batched.

    Edges are used as 0-based indices; the matrix is symmetrised (``max(A, Aᵀ)``, duplicate
    edges collapse to 1, self-loops kept), rows and columns of ignored keypoints are zeroed,
    rows are normalised by their degree (isolated rows stay 0) and stacked under ``diag(valid)``.

    Args:
        num_pts: K.
        edges: int64[B, E, 2] 0-based edges; rows with any negative index are padding.
        ignore: bool[B, K] keypoints to cut out of the graph (True = masked).

    Returns:
        float32[B, 2, K, K]: channel 0 ``diag(~ignore)``, channel 1 normalised adjacency.
    """
    bs = ignore.shape[0]
    device = ignore.device
    adj = torch.zeros(bs, num_pts, num_pts, device=device)
    edges = edges.to(device=device, dtype=torch.long)
    if edges.numel():
        valid = (edges >= 0).all(dim=-1)
        if (edges[valid] >= num_pts).any():
            raise ValueError(f"skeleton edge index out of range for K={num_pts}")
        b_idx = torch.arange(bs, device=device)[:, None].expand_as(valid)
        adj[b_idx[valid], edges[..., 0][valid], edges[..., 1][valid]] = 1.0
    adj = torch.maximum(adj, adj.transpose(1, 2))
    keep = (~ignore).float()
    adj = adj * keep[:, :, None] * keep[:, None, :]
    # Official: nan_to_num(adj / rowsum), i.e. 0/0 -> 0 for isolated or masked rows.
    adj = torch.nan_to_num(adj / adj.sum(dim=-1, keepdim=True))
    return torch.stack((torch.diag_embed(keep), adj), dim=1)


def pad_skeleton(skeleton, batch: int) -> torch.Tensor:
    """Turn a skeleton description into a padded int64[B, E, 2] tensor (-1 padding).

    Args:
        skeleton: None (no edges); an int tensor/array/nested list [E, 2] shared by the batch;
            [B, E, 2] per sample (rows with a negative index are padding); or a length-B
            ragged sequence of [E_b, 2] edge lists (possibly empty). A regular nested list is
            read by its shape: 2-D = shared edge list, 3-D = per sample.
        batch: B.

    Returns:
        int64[B, E_max, 2].
    """
    if skeleton is None:
        return torch.zeros(batch, 0, 2, dtype=torch.long)
    if isinstance(skeleton, torch.Tensor):
        t = skeleton.to(torch.long)
    else:
        try:
            t = torch.from_numpy(np.asarray(skeleton, dtype=np.int64))
        except ValueError:  # ragged: one edge list per sample
            per_sample = [np.asarray(e, dtype=np.int64).reshape(-1, 2) for e in skeleton]
            if len(per_sample) != batch:
                raise ValueError(f"skeleton has {len(per_sample)} entries for a batch of {batch}") from None
            t = torch.full((batch, max(len(e) for e in per_sample), 2), -1, dtype=torch.long)
            for b, e in enumerate(per_sample):
                t[b, : len(e)] = torch.from_numpy(e)
            return t
    if t.ndim <= 2:
        t = t.reshape(-1, 2)[None].expand(batch, -1, -1)
    if t.ndim != 3 or t.shape[0] != batch or t.shape[-1] != 2:
        raise ValueError(f"skeleton must be [E, 2] or [B, E, 2] for B={batch}, got {tuple(t.shape)}")
    return t
