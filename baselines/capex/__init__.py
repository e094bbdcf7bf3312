"""CapeX (Rusanovsky et al., ICLR 2025) re-implementation."""
