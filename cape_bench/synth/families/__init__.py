"""Template families: the rigs that CAPE-Synth categories are parameterised from."""
