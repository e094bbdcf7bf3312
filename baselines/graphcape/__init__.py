"""GraphCape / PoseAnything (Hirschorn & Avidan, ECCV 2024) re-implementation."""
