"""faiss side of `cargo xtask bench-faiss quantizers`: times k-means and 8-bit PQ encoding.

Reads the data written by xtask, prints one JSON object on stdout.
"""
import json
import sys
import time

import numpy as np
import faiss

data_path, k, iters, n_subspaces, threads, repeats = sys.argv[1], *map(int, sys.argv[2:7])
faiss.omp_set_num_threads(threads)
x = np.load(data_path).astype(np.float32)
n, d = x.shape

kmeans_times, objective = [], None
for r in range(repeats):
    km = faiss.Kmeans(d, k, niter=iters, seed=1234 + r, max_points_per_centroid=n, verbose=False)
    start = time.perf_counter()
    km.train(x)
    kmeans_times.append(time.perf_counter() - start)
    objective = float(km.obj[-1])

pq = faiss.ProductQuantizer(d, n_subspaces, 8)
pq.train(x)
encode_times = []
for _ in range(repeats):
    start = time.perf_counter()
    codes = pq.compute_codes(x)
    encode_times.append(time.perf_counter() - start)
recon = pq.decode(codes)
mse = float(((x - recon) ** 2).sum(axis=1).mean())

print(json.dumps({
    "faiss_version": faiss.__version__,
    "kmeans_seconds": kmeans_times,
    "kmeans_final_inertia": objective,
    "encode_seconds": encode_times,
    "pq_mse": mse,
}))
