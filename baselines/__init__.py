"""Re-implementations of the published CAPE baselines (POMNet, CapeFormer, GraphCape, CapeX)."""
