"""poeem: IVF-PQ indexes, searched and built from numpy arrays, with a faiss-style API.

    import numpy as np, poeem
    xb = np.random.default_rng(0).standard_normal((10_000, 64), dtype=np.float32)
    index = poeem.build_index(xb, n_lists=64, n_subspaces=16)   # IVF64,PQ16 (8 bits)
    index.save("items.poeem")                                    # atomic
    index = poeem.Index.open("items.poeem")                      # mmap, microseconds
    scores, ids = index.search(xb[:5], 10, nprobe=8)             # (5, 10) float32, int64

Arrays: float32 or float64 vectors (C or Fortran order; anything but C-ordered float32 is
converted to it once per call), ids of any integer dtype. The GIL is released while poeem
computes, so Python threads can search one index at once.
"""

from ._errors import CorruptIndexError, InvalidArgumentError, PoeemError
from ._poeem import Index, IvfPqCodec, KMeans, __version__, build_index

__all__ = [
    "CorruptIndexError",
    "Index",
    "InvalidArgumentError",
    "IvfPqCodec",
    "KMeans",
    "PoeemError",
    "__version__",
    "build_index",
]
