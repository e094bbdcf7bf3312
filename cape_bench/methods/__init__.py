"""Reference methods that ship with the core (no torch): ``support-copy`` and ``oracle``."""
