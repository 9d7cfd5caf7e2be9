"""faiss side of `cargo xtask reproduce --faiss`: post-hoc IVF-PQ indexes built by faiss.

Usage: python faiss_posthoc.py CONFIG.json

The configuration, written by xtask, names:
- `items`, `queries`: float32 `.npy` files (n × d and nq × d, row-major);
- `metric`: "l2" or "ip"; `k`: results per query; `nprobes`: the lists probed, one search each;
- `seed`: seeds every k-means that faiss lets us seed; `threads`: OpenMP threads (0: faiss's
  default);
- `indexes`: per index, its `index_factory` string and `labels`, one `.npy` path per nprobe.

Each index is trained and filled with the items (`build_seconds`: train + add, timed with
`perf_counter`), its relative distortion is measured on the items (sum of ‖x − sa_decode(sa_encode(x))‖²
over sum of ‖x‖², that is the coarse centroid plus the decoded residual, mapped back through OPQ's
rotation where there is one), and for each nprobe the ids of the k best items of every query are
saved as an nq × k int64 `.npy` (-1 where fewer than k items were found). Recall and the other
metrics are computed by xtask. Prints one JSON object: `faiss_version` and, per index in the
configuration's order, `build_seconds` and `relative_distortion` (null when every item is zero).
"""
import json
import sys
import time

import numpy as np
import faiss

# Rows encoded and decoded at a time when measuring the distortion, to bound memory.
DISTORTION_CHUNK = 65536

with open(sys.argv[1], encoding="utf-8") as config_file:
    config = json.load(config_file)
items = np.ascontiguousarray(np.load(config["items"]), dtype=np.float32)
queries = np.ascontiguousarray(np.load(config["queries"]), dtype=np.float32)
n, d = items.shape
metric = {"l2": faiss.METRIC_L2, "ip": faiss.METRIC_INNER_PRODUCT}[config["metric"]]
k = config["k"]
seed = config["seed"]
if config["threads"] > 0:
    faiss.omp_set_num_threads(config["threads"])


def configure(index):
    """Seeds the trained parts of `index`, turns polysemous training off and returns the IVF-PQ
    part, with the product quantizers handed to OPQ (kept alive by the caller)."""
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    assert isinstance(ivf, faiss.IndexIVFPQ) and ivf.by_residual
    # Polysemous training only permutes the codes for Hamming filtering, which is off
    # (polysemous_ht = 0); it would only add to the build time.
    ivf.do_polysemous_training = False
    ivf.cp.seed = seed
    ivf.pq.cp.seed = seed + 1
    opq_quantizers = []
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            opq = faiss.downcast_VectorTransform(index.chain.at(i))
            if isinstance(opq, faiss.OPQMatrix):
                # Left alone, OPQ trains a product quantizer of its own, 8 bits wide, with a fixed
                # seed (1234); this one has the index's width and our seed. OPQ's initial random
                # rotation and its subsampling (beyond max_train_points) keep faiss's fixed seed.
                pq = faiss.ProductQuantizer(opq.d_out, opq.M, ivf.pq.nbits)
                pq.cp.seed = seed + 2
                opq.pq = pq
                opq_quantizers.append(pq)
    return ivf, opq_quantizers


def relative_distortion(index):
    """Sum of squared reconstruction errors of the items over the sum of their squared norms."""
    error = 0.0
    norm = 0.0
    for start in range(0, n, DISTORTION_CHUNK):
        x = items[start:start + DISTORTION_CHUNK]
        x_hat = index.sa_decode(index.sa_encode(x))
        error += float(np.square(x.astype(np.float64) - x_hat).sum())
        norm += float(np.square(x.astype(np.float64)).sum())
    return error / norm if norm > 0 else None


results = []
for spec in config["indexes"]:
    index = faiss.index_factory(d, spec["factory"], metric)
    ivf, opq_quantizers = configure(index)
    start = time.perf_counter()
    index.train(items)
    index.add(items)
    build_seconds = time.perf_counter() - start
    del opq_quantizers  # used by OPQ's training only
    distortion = relative_distortion(index)
    assert len(spec["labels"]) == len(config["nprobes"])
    for nprobe, path in zip(config["nprobes"], spec["labels"]):
        ivf.nprobe = nprobe
        _, labels = index.search(queries, k)
        np.save(path, np.ascontiguousarray(labels, dtype=np.int64))
    results.append({"build_seconds": build_seconds, "relative_distortion": distortion})

print(json.dumps({"faiss_version": faiss.__version__, "indexes": results}))
