"""Test-wide settings.

Tests run small tensors where torch's intra-op threads only add overhead, and
several test processes may share two cores; one thread keeps timings sane.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see reverie/cli.py

import torch  # noqa: E402

torch.set_num_threads(1)
