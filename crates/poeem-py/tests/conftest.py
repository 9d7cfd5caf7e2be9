"""Shared fixtures: deterministic data and the `poeem` command.

The tests use generated data only (never ../shared) and no network. The `poeem` binary is taken
from the environment variable POEEM_BIN, else from the workspace's target/release or
target/debug; a missing binary fails the tests that need it (build it with
`cargo build -p poeem-cli`).
"""

import os
import pathlib
import subprocess

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]


def clustered(n, dim, n_clusters=32, seed=0):
    """`n` float32 vectors around `n_clusters` random centres (like real embeddings: structure
    for the coarse quantizer to find)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32) * 3
    labels = rng.integers(0, n_clusters, n)
    return (centres[labels] + rng.standard_normal((n, dim))).astype(np.float32)


def anisotropic(n, dim, seed=0):
    """Clustered vectors whose columns' scales decay like real embeddings' spectra (1/i^0.7),
    so that PQ is neither trivial nor hopeless."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.arange(1, dim + 1) ** 0.7).astype(np.float32)
    centres = rng.standard_normal((200, dim)).astype(np.float32) * 2
    labels = rng.integers(0, 200, n)
    noise = rng.standard_normal((n, dim)).astype(np.float32)
    return ((centres[labels] + noise) * scale).astype(np.float32)


@pytest.fixture(scope="session")
def poeem_bin():
    candidates = [os.environ.get("POEEM_BIN")] if os.environ.get("POEEM_BIN") else [
        ROOT / "target" / "release" / "poeem",
        ROOT / "target" / "debug" / "poeem",
    ]
    for path in candidates:
        if path and pathlib.Path(path).is_file():
            return str(path)
    pytest.fail(
        f"no poeem binary (looked at {', '.join(map(str, candidates))}): "
        "run `cargo build -p poeem-cli` or set POEEM_BIN"
    )


@pytest.fixture(scope="session")
def run_cli(poeem_bin):
    def run(*args):
        result = subprocess.run(
            [poeem_bin, *map(str, args)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"poeem {' '.join(map(str, args))}: {result.stderr}"
        return result

    return run


@pytest.fixture(scope="session")
def xb():
    return clustered(3000, 24, seed=1)


@pytest.fixture(scope="session")
def xq():
    return clustered(200, 24, seed=2)
