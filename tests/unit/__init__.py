"""Unit tests: pure functions and single modules (metrics, loaders, the doctor, the generator, encoders, backbones, model parts)."""
