from os import PathLike
from typing import Any, Literal, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

class PoeemError(Exception): ...
class InvalidArgumentError(PoeemError, ValueError): ...
class CorruptIndexError(PoeemError, ValueError): ...

_Path = Union[str, PathLike[str]]
_Floats = npt.NDArray[Union[np.float32, np.float64]]
_Ids = npt.NDArray[np.integer[Any]]

class Index:
    @staticmethod
    def open(path: _Path) -> Index: ...
    @staticmethod
    def read(path: _Path) -> Index: ...
    def save(self, path: _Path) -> None: ...
    def verify(self) -> None: ...
    def info(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> Literal["ip", "l2", "cosine"]: ...
    @property
    def item_keys(self) -> list[str] | None: ...
    @property
    def n_lists(self) -> int: ...
    @property
    def n_subspaces(self) -> int: ...
    @property
    def n_bits(self) -> int: ...
    @property
    def rotated(self) -> bool: ...
    def search(
        self,
        xq: _Floats,
        k: int,
        *,
        nprobe: int = 8,
        threads: Optional[int] = None,
        rerank_factor: int = 8,
    ) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
    def reconstruct(self, ids: Union[int, _Ids]) -> npt.NDArray[np.float32]: ...

def build_index(
    xb: _Floats,
    *,
    ids: Optional[_Ids] = None,
    n_lists: int,
    n_subspaces: int,
    n_bits: int = 8,
    metric: Literal["ip", "l2", "cosine"] = "ip",
    opq: bool = False,
    opq_rounds: int = 50,
    kmeans_iterations: int = 20,
    seed: int = 0,
    threads: Optional[int] = None,
    progress: bool = False,
    refine: Optional[Literal["f32", "f16", "pq8"]] = None,
) -> Index: ...

class KMeans:
    def __init__(
        self,
        n_clusters: int,
        *,
        max_iter: int = 25,
        tolerance: float = 1e-4,
        init: Literal["random", "kmeans++"] = "random",
        max_points_per_centroid: Optional[int] = 256,
        seed: int = 0,
    ) -> None: ...
    def fit(self, x: _Floats, *, threads: Optional[int] = None, progress: bool = False) -> KMeans: ...
    @property
    def centroids(self) -> npt.NDArray[np.float32]: ...
    @property
    def inertia(self) -> list[float]: ...
    @property
    def n_clusters(self) -> int: ...
    def assign(
        self, x: _Floats, *, threads: Optional[int] = None
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...

class IvfPqCodec:
    @staticmethod
    def train(
        x: _Floats,
        *,
        n_lists: int,
        n_subspaces: int,
        n_bits: int = 8,
        opq: bool = False,
        opq_rounds: int = 50,
        kmeans_iterations: int = 20,
        seed: int = 0,
        threads: Optional[int] = None,
        progress: bool = False,
    ) -> IvfPqCodec: ...
    @property
    def dim(self) -> int: ...
    @property
    def n_lists(self) -> int: ...
    @property
    def n_subspaces(self) -> int: ...
    @property
    def n_bits(self) -> int: ...
    def encode(
        self, x: _Floats, *, threads: Optional[int] = None
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[Union[np.uint8, np.uint16]]]: ...
    def decode(
        self, lists: _Ids, codes: _Ids, *, threads: Optional[int] = None
    ) -> npt.NDArray[np.float32]: ...
    @staticmethod
    def from_parts(
        coarse_centroids: _Floats,
        codebooks: _Floats,
        rotation: Optional[_Floats] = None,
        *,
        dim: Optional[int] = None,
    ) -> IvfPqCodec: ...
    @property
    def coarse_centroids(self) -> npt.NDArray[np.float32]: ...
    @property
    def codebooks(self) -> npt.NDArray[np.float32]: ...
    @property
    def rotation(self) -> npt.NDArray[np.float32]: ...
    @property
    def padded_dim(self) -> int: ...
    def quantize(
        self, x: _Floats, *, threads: Optional[int] = None
    ) -> Tuple[
        npt.NDArray[np.int64],
        npt.NDArray[Union[np.uint8, np.uint16]],
        npt.NDArray[np.float32],
        npt.NDArray[np.float32],
    ]: ...
    def index(
        self,
        x: _Floats,
        *,
        ids: Optional[_Ids] = None,
        metric: str = "ip",
        threads: Optional[int] = None,
    ) -> Index: ...
