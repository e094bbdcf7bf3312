"""Code shared by the baselines (geometry, positional encodings, the CapeFormer-lineage transformer)."""
