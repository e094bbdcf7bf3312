"""CapeNext (AAAI'26) re-implementation: CapeX + the HCMI/DSFR fusion module.

Import-light on purpose: the torch modules live in submodules (``capenext.fuse``) and are imported on use.
"""

__all__ = ["fuse"]
