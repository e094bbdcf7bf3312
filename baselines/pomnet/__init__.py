"""POMNet (Xu et al., ECCV 2022) re-implementation: the ``TransformerHead`` keypoint head.

Import-light on purpose: the torch modules live in :mod:`baselines.pomnet.model` and are
imported on use.
"""

__all__ = ["model"]
