"""CapeFormer (Shi et al., CVPR 2023) re-implementation."""
