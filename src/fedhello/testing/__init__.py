"""Test-only fixtures: random-weight checkpoints written like hub checkpoints (`checkpoints`) and synthetic
data sets in the paper's hub schemas (`datasets`). Used by the tests and `scripts/gpu-smoke.sh`; the
library never imports this package. Numbers obtained with them measure speed, memory and correctness,
never model quality."""
