"""Shared helpers of the poeem.torch tests: deterministic data and the `poeem` command.

Generated data only, no network. The `poeem` binary comes from POEEM_BIN, else the workspace's
target/release or target/debug (`cargo build -p poeem-cli`).
"""

import io
import os
import pathlib
import subprocess

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[3]

torch.set_num_threads(1)


def clustered(n, dim, n_clusters=32, seed=0):
    """`n` float32 vectors around `n_clusters` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32) * 3
    labels = rng.integers(0, n_clusters, n)
    return (centres[labels] + rng.standard_normal((n, dim))).astype(np.float32)


def state_bytes(module):
    """A module's state_dict as bytes (torch.save), for bit-for-bit comparisons."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getvalue()


def assert_states_equal(a, b):
    """Two state_dicts (the layer's extra state included) equal bit for bit."""
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            assert x.keys() == y.keys(), key
            for k in x:
                if isinstance(x[k], torch.Tensor):
                    assert torch.equal(x[k], y[k]), (key, k)
                else:
                    assert x[k] == y[k], (key, k)
        else:
            assert x.dtype == y.dtype and x.shape == y.shape, key
            assert torch.equal(x, y), key


@pytest.fixture(scope="session")
def poeem_bin():
    env = os.environ.get("POEEM_BIN")
    candidates = [env] if env else [ROOT / "target" / "release" / "poeem",
                                    ROOT / "target" / "debug" / "poeem"]
    for path in candidates:
        if path and pathlib.Path(path).is_file():
            return str(path)
    pytest.fail(f"no poeem binary (looked at {', '.join(map(str, candidates))}): "
                "run `cargo build -p poeem-cli` or set POEEM_BIN")


@pytest.fixture(scope="session")
def run_cli(poeem_bin):
    def run(*args):
        result = subprocess.run([poeem_bin, *map(str, args)], capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, f"poeem {' '.join(map(str, args))}: {result.stderr}"
        return result

    return run
