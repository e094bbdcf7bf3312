"""cape-bench: the benchmark and evaluation harness for category-agnostic pose estimation (CAPE).

Importing the package is cheap: no torch, no model code. Methods are plug-ins resolved by name
through :mod:`cape_bench.registry`.
"""

__version__ = "0.1.0"
