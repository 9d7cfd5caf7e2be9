"""poeem.torch: the Poeem indexing layer for any PyTorch model (Poeem, SIGIR 2021).

    import torch, poeem.torch
    layer = poeem.torch.IndexingLayer(64, n_lists=64, n_subspaces=16, warmup_steps=100,
                                      buffer_size=4096, rotation="opq")
    item = layer(item_tower(features))            # τ(x) forward, identity backward
    layer.learn_coarse_from(item_tower(catalogue_sample).detach())  # optional, see below
    loss = retrieval_loss(query, item) + layer.regularizer_loss()   # the one line
    ...
    layer.export(item_embeddings, item_ids, "items.poeem", metric="ip")

This module imports torch; `import poeem` does not. The heavy, non-differentiable steps (nearest
list, nearest codeword per subspace, k-means and OPQ at the warm start, Givens pair selection and
steps) run in poeem's Rust crates with the GIL released; gathering codewords, the residuals, the
straight-through estimator and the regularizer are torch operations. See docs/torch.md.
"""

import math

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "poeem.torch needs PyTorch (torch >= 1.13), which `import poeem` does not: install it "
        "(Debian: apt-get install python3-torch; otherwise see pytorch.org)") from e

from ._errors import InvalidArgumentError
from ._poeem import IvfPqCodec, givens_skew, givens_step

__all__ = ["IndexingLayer", "ROTATIONS", "PHASES"]

#: The rotation modes: none; OPQ fitted at the warm start, then fixed; the identity at the warm
#: start, then one Givens step per training call (random, greedy or steepest pair selection).
ROTATIONS = ("none", "opq", "givens-random", "givens-greedy", "givens-steepest")

#: The phases a training run goes through, in order.
PHASES = ("warm-up", "buffering", "joint")

COARSE_OBJECTIVES = ("list-means", "reconstruction")

#: Which rows fill the warm-start buffer: the batches the layer sees, or the rows given to
#: `learn_coarse_from` (a uniform catalogue sample, as the Rust `movielens` preset).
WARM_START_ITEMS = ("batches", "catalogue")

# Mixed into the seed of the Givens pair stream so that it differs from the k-means streams.
_GIVENS_SALT = 0x6917_E45D_3A0C_B5F1
_STATE_VERSION = 1


class _StraightThrough(torch.autograd.Function):
    """Returns `tau` (exactly its values); the gradient goes to `x` unchanged."""

    @staticmethod
    def forward(ctx, x, tau):  # noqa: D401 - torch's signature
        return tau.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _distributed():
    """(world size, rank) of the default process group, or None outside torch.distributed."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_world_size(), dist.get_rank()
    return None


class IndexingLayer(nn.Module):
    """The Poeem indexing layer: an IVF-PQ codec inside the model, trained with it.

    `IndexingLayer(dim, n_lists, n_subspaces, n_bits=8, *, warmup_steps=1024, buffer_size=8192,
    regularizer_weight=1.0, rotation="none", seed=0, ...)`.

    In training mode, each `forward(x)` call (one per training step; `x` a `(n, dim)` float32
    tensor) advances the phases of the Rust layer:

    - the first `warmup_steps` calls: the identity;
    - buffering: the identity, and the rows are kept until `buffer_size` rows are gathered
      (under torch.distributed, every process's rows, gathered in rank order at each call, so
      that every process holds the same buffer);
    - the next call initialises the coarse centroids and the codebooks by k-means on the buffer
      (after OPQ with `rotation="opq"`), then runs as a joint call;
    - joint: returns τ(x), the quantized vector, with the straight-through gradient (the
      gradient reaching `x` is exactly the incoming one), and sets `regularizer_loss()`; with a
      `givens-*` rotation, takes one Givens step on the batch's distortion.

    After the call, `learn_coarse_from(rows)` with a uniform sample of the catalogue (embedded
    by the current item tower, no gradient needed) makes the coarse centroids learn from those
    rows instead of the batch's, and with `warm_start_items="catalogue"` fills the warm-start
    buffer in place of the batches: the Rust `movielens` preset's fix for popularity-skewed
    batches, which otherwise crowd the coarse lists onto popular items.

    In eval mode it returns τ(x) (x before the warm start) and changes nothing.

    The coarse centroids and codebooks are `nn.Parameter`s moved by the user's optimizer
    through `regularizer_loss()`; the rotation is a buffer changed only by OPQ and Givens steps
    (so it stays orthonormal). `state_dict()` holds everything, the warm-start buffer included.
    """

    def __init__(
        self,
        dim,
        n_lists,
        n_subspaces,
        n_bits=8,
        *,
        warmup_steps=1024,
        buffer_size=8192,
        regularizer_weight=1.0,
        rotation="none",
        coarse_objective="list-means",
        warm_start_items="batches",
        kmeans_iterations=25,
        opq_rounds=50,
        givens_learning_rate=1e-3,
        givens_max_angle=0.1,
        reorthonormalize_every=1000,
        seed=0,
        threads=None,
    ):
        super().__init__()
        ints = dict(dim=dim, n_lists=n_lists, n_subspaces=n_subspaces, n_bits=n_bits,
                    warmup_steps=warmup_steps, buffer_size=buffer_size,
                    kmeans_iterations=kmeans_iterations, opq_rounds=opq_rounds,
                    reorthonormalize_every=reorthonormalize_every, seed=seed)
        for name, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise InvalidArgumentError(f"{name} = {value!r}: expected an integer ≥ 0")
        if dim < 1 or n_subspaces < 1:
            raise InvalidArgumentError(
                f"dim = {dim}, n_subspaces = {n_subspaces}: both must be at least 1")
        if not 1 <= n_bits <= 16:
            raise InvalidArgumentError(f"n_bits = {n_bits}: expected 1 to 16")
        if buffer_size < max(n_lists, 2 ** n_bits):
            raise InvalidArgumentError(
                f"buffer_size = {buffer_size}: must be at least max(n_lists, 2**n_bits) = "
                f"{max(n_lists, 2 ** n_bits)} (the warm-start k-means needs a row per centroid)")
        for name, value in (("regularizer_weight", regularizer_weight),
                            ("givens_learning_rate", givens_learning_rate)):
            if not (math.isfinite(value) and value >= 0):
                raise InvalidArgumentError(f"{name} = {value}: must be finite and at least 0")
        if not (math.isfinite(givens_max_angle) and givens_max_angle > 0):
            raise InvalidArgumentError(
                f"givens_max_angle = {givens_max_angle}: must be finite and positive")
        if rotation not in ROTATIONS:
            raise InvalidArgumentError(
                f"rotation = {rotation!r}: expected one of {', '.join(map(repr, ROTATIONS))}")
        if coarse_objective not in COARSE_OBJECTIVES:
            raise InvalidArgumentError(
                f"coarse_objective = {coarse_objective!r}: expected one of "
                f"{', '.join(map(repr, COARSE_OBJECTIVES))}")
        if warm_start_items not in WARM_START_ITEMS:
            raise InvalidArgumentError(
                f"warm_start_items = {warm_start_items!r}: expected one of "
                f"{', '.join(map(repr, WARM_START_ITEMS))}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InvalidArgumentError(f"threads = {threads!r}: expected None or an integer ≥ 1")
        self.dim = int(dim)
        self.n_lists = int(n_lists)
        self.n_subspaces = int(n_subspaces)
        self.n_bits = int(n_bits)
        self.warmup_steps = int(warmup_steps)
        self.buffer_size = int(buffer_size)
        self.regularizer_weight = float(regularizer_weight)
        self.rotation_mode = rotation
        self.coarse_objective = coarse_objective
        self.warm_start_items = warm_start_items
        self.kmeans_iterations = int(kmeans_iterations)
        self.opq_rounds = int(opq_rounds)
        self.givens_learning_rate = float(givens_learning_rate)
        self.givens_max_angle = float(givens_max_angle)
        self.reorthonormalize_every = int(reorthonormalize_every)
        self.seed = int(seed)
        self.threads = threads
        self.padded_dim = -(-self.dim // self.n_subspaces) * self.n_subspaces
        sub = self.padded_dim // self.n_subspaces

        #: Coarse centroids `(n_lists, padded_dim)`, in the rotated space.
        self.coarse_centroids = nn.Parameter(torch.zeros(self.n_lists, self.padded_dim))
        #: PQ codebooks `(n_subspaces, 2**n_bits, padded_dim / n_subspaces)`.
        self.codebooks = nn.Parameter(torch.zeros(self.n_subspaces, 2 ** self.n_bits, sub))
        #: The rotation `R` (`x' = x R`, rows), the identity until OPQ or Givens steps move it.
        self.register_buffer("rotation", torch.eye(self.padded_dim))
        #: Training calls so far.
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        #: Givens steps taken (fixes the pair stream of the next one).
        self.register_buffer("givens_steps", torch.zeros((), dtype=torch.int64))
        #: Whether the warm start has run (0 or 1; int64, as gloo broadcasts no bool tensors).
        self.register_buffer("initialized", torch.zeros((), dtype=torch.int64))
        # The warm-start buffer and whether it is full: the module's extra state (in state_dict;
        # DistributedDataParallel does not broadcast it, the layer gathers it itself).
        self._buffer = torch.zeros(0, self.dim)
        self._buffer_full = False
        self._regularizer = None
        # The phase of the last training call until `learn_coarse_from` consumes it, and the
        # batch's (centroid rows, codewords, rotated rows) of a joint call; both within a step.
        self._last_phase = None
        self._batch = None

    # -- settings and state -------------------------------------------------------------------

    def _config(self):
        return dict(dim=self.dim, n_lists=self.n_lists, n_subspaces=self.n_subspaces,
                    n_bits=self.n_bits, warmup_steps=self.warmup_steps,
                    buffer_size=self.buffer_size, rotation=self.rotation_mode,
                    warm_start_items=self.warm_start_items)

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in self._config().items())

    def get_extra_state(self):
        return {"version": _STATE_VERSION, "config": self._config(),
                "buffer": self._buffer.clone(), "buffer_full": self._buffer_full}

    def set_extra_state(self, state):
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise InvalidArgumentError("not a poeem.torch.IndexingLayer state (or a newer one)")
        saved = {"warm_start_items": "batches", **state["config"]}  # saved before it existed
        if saved != self._config():
            raise InvalidArgumentError(
                f"the saved layer has other settings: saved {saved}, this layer "
                f"{self._config()}")
        buffer = state["buffer"]
        if buffer.dim() != 2 or buffer.shape[1] != self.dim or buffer.dtype != torch.float32:
            raise InvalidArgumentError(
                f"saved warm-start buffer: expected float32 (n, {self.dim}), got "
                f"{buffer.dtype} {tuple(buffer.shape)}")
        self._buffer = buffer.detach().cpu().clone()
        self._buffer_full = bool(state["buffer_full"])
        self._regularizer = None
        self._last_phase = None
        self._batch = None

    @property
    def phase(self):
        """The phase the next training call runs in: "warm-up", "buffering" or "joint"."""
        if int(self.steps) < self.warmup_steps:
            return "warm-up"
        if bool(self.initialized) or self._buffer_full:
            return "joint"
        return "buffering"

    @property
    def buffered_rows(self):
        """Rows in the warm-start buffer."""
        return self._buffer.shape[0]

    def codec(self):
        """The learned codec as a `poeem.IvfPqCodec` (a copy of the current parameters).

        Its `decode(*encode(x))` is exactly the layer's τ(x). Raises before the warm start."""
        self._require_initialized("codec()")
        self._check_parameters()
        coarse = self.coarse_centroids.detach().cpu().numpy()
        books = self.codebooks.detach().cpu().numpy()
        rotation = None if self.rotation_mode == "none" else self.rotation.detach().cpu().numpy()
        return IvfPqCodec.from_parts(coarse, books, rotation, dim=self.dim)

    def _require_initialized(self, what):
        if not bool(self.initialized):
            raise InvalidArgumentError(
                f"{what} before the warm start: the layer is in its {self.phase} phase after "
                f"{int(self.steps)} training calls (warm-up of {self.warmup_steps} calls, then "
                f"{self.buffer_size} rows buffered for the k-means init, {self.buffered_rows} "
                "so far); train longer or with a shorter warm-up")

    def _check_parameters(self):
        for name, t in (("coarse_centroids", self.coarse_centroids),
                        ("codebooks", self.codebooks), ("rotation", self.rotation)):
            if t.dtype != torch.float32:
                raise InvalidArgumentError(
                    f"{name} is {t.dtype}: the layer works in float32 (do not call .double() "
                    "or .half() on it)")
            if not bool(torch.isfinite(t).all()):
                raise InvalidArgumentError(
                    f"{name} holds NaN or infinity (a learning rate too large for the "
                    "regularizer?)")

    def _check_input(self, x):
        if not isinstance(x, torch.Tensor):
            raise InvalidArgumentError(
                f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dtype != torch.float32:
            raise InvalidArgumentError(
                f"x: expected a float32 tensor, got {x.dtype} (convert with x.float())")
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise InvalidArgumentError(
                f"x: expected shape (n, {self.dim}), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise InvalidArgumentError("x is empty (0 rows)")
        finite = torch.isfinite(x.detach())
        if not bool(finite.all()):
            row, col = (int(i) for i in (~finite).nonzero()[0])
            raise InvalidArgumentError(f"x: row {row}, column {col} is not finite")

    # -- forward ------------------------------------------------------------------------------

    def forward(self, x):
        self._check_input(x)
        if not self.training:
            if not bool(self.initialized):
                return x
            tau = self._quantize(x)[3]
            return _StraightThrough.apply(x, tau)
        phase = self.phase
        catalogue = self.warm_start_items == "catalogue"
        if phase == "buffering" and catalogue and self._last_phase == "buffering":
            raise InvalidArgumentError(
                "with warm_start_items=\"catalogue\" the warm-start buffer fills from "
                "learn_coarse_from(rows), but the last buffering call was not followed by one: "
                "call it after every training call")
        self._batch = None
        if phase == "warm-up":
            out = x
        elif phase == "buffering":
            if not catalogue:
                self._append_to_buffer(x)
            out = x
        else:
            if not bool(self.initialized):
                self._warm_start()
            out = self._joint(x)
        if phase != "joint":
            self._regularizer = None
        self._last_phase = phase
        self.steps += 1
        return out

    def learn_coarse_from(self, x):
        """After this step's training call, makes the coarse level learn from the rows `x`
        (`(n, dim)` float32, a uniform sample of the catalogue through the current item tower;
        no gradient reaches them) instead of from the batch, as the Rust layer's
        `learn_coarse_from`:

        - joint phase: `regularizer_loss()` keeps the batch's value and its codebook gradient,
          but the coarse centroids get the gradient of `w Σ_x ‖x R − v_j‖²` over these rows
          (`coarse_objective="list-means"`; `w Σ_x ‖z − x R‖²` with "reconstruction"), `j`
          their nearest lists: an online k-means of the catalogue, whose lists weigh every
          item alike as a post-hoc index does, however skewed the batches' popularity;
        - buffering phase, with `warm_start_items="catalogue"`: the rows fill the warm-start
          buffer in place of the batches (every process's, in rank order, under
          torch.distributed), so the warm-start k-means runs on the catalogue;
        - otherwise (warm-up, or buffering from batches), and in eval mode: nothing.

        Call it at most once per training call, after it and before `regularizer_loss()`.
        Costs one encode of `x` per joint step (and the caller's item-tower pass)."""
        self._check_input(x)
        if not self.training:
            return
        phase = self._last_phase
        if phase is None:
            raise InvalidArgumentError(
                "learn_coarse_from(x) follows a training call of the layer, once per call: "
                "there is no training call waiting for it")
        if phase == "buffering" and self.warm_start_items == "catalogue":
            self._append_to_buffer(x)
        elif phase == "joint" and self.n_lists > 0:
            with torch.enable_grad():  # the caller may embed the sample under torch.no_grad()
                self._regularizer = self._coarse_from(x.detach())
        self._last_phase = None  # consumed (a failed call above leaves it waiting)

    def _coarse_from(self, x):
        """The regularizer with the coarse centroids' gradient from the rows `x`."""
        lists, codes, rotated, _ = self._quantize(x)
        v = self.coarse_centroids[lists]
        if self.coarse_objective == "list-means":
            coarse = ((v - rotated) ** 2).sum()
        else:
            n, m = codes.shape
            c = self.codebooks.detach()[torch.arange(m, device=codes.device), codes]
            coarse = ((v + c.reshape(n, -1) - rotated) ** 2).sum()
        vb, cb, rb = self._batch
        w = self.regularizer_weight
        # Value: the batch's w Σ ‖z − x'‖²; gradients: the codebooks from the batch, the
        # centroids from `x` (a term of value 0).
        return w * ((vb.detach() + cb - rb) ** 2).sum() + w * (coarse - coarse.detach())

    def regularizer_loss(self):
        """The centroid regularizer of the last training call, a 0-d tensor to add to the loss:
        `loss = loss + layer.regularizer_loss()`.

        `w Σ_batch ‖z − stopgrad(x R)‖²` with `z` the reconstruction in the rotated space (with
        `coarse_objective="list-means"`, the default, the coarse centroids get the gradient of
        `w Σ ‖x R − v_j‖²` instead, as in the Rust layer; after `learn_coarse_from(rows)`,
        over those rows instead of the batch's). Only the centroids and codebooks get its
        gradient, never the model. Before the joint phase it is a zero that still reaches
        both parameters (so DistributedDataParallel sees them used)."""
        if self._regularizer is not None:
            return self._regularizer
        return 0.0 * (self.coarse_centroids.sum() + self.codebooks.sum())

    def _quantize(self, x):
        """(lists, codes, rotated, tau) as tensors on the parameters' device."""
        codec = self.codec()
        xs = x.detach().cpu().contiguous().numpy()
        lists, codes, rotated, tau = codec.quantize(xs, threads=self.threads)
        device = self.codebooks.device
        return (torch.from_numpy(lists).to(device),
                torch.from_numpy(codes.astype(np.int64)).to(device),
                torch.from_numpy(rotated).to(device),
                torch.from_numpy(tau).to(x.device))

    def _joint(self, x):
        lists, codes, rotated, tau = self._quantize(x)
        n, m = codes.shape
        if self.n_lists > 0:
            v = self.coarse_centroids[lists]
        else:
            v = torch.zeros(n, self.padded_dim, device=rotated.device)
        c = self.codebooks[torch.arange(m, device=codes.device), codes].reshape(n, -1)
        w = self.regularizer_weight
        if self.coarse_objective == "list-means" and self.n_lists > 0:
            # Codebooks: the residual's error; centroids: their own error (value: w Σ ‖z − x'‖²).
            codeword = ((v.detach() + c - rotated) ** 2).sum()
            coarse = ((v - rotated) ** 2).sum()
            reg = w * (codeword + coarse - coarse.detach())
        else:
            reg = w * ((v + c - rotated) ** 2).sum()
        self._regularizer = reg
        self._batch = (v, c, rotated)
        if self.rotation_mode.startswith("givens-"):
            with torch.no_grad():
                error = (v + c).detach() - rotated
                self._givens_step(rotated, -2.0 * w * error)
        return _StraightThrough.apply(x, tau)

    # -- warm start, Givens steps, and their synchronisation ----------------------------------

    def _append_to_buffer(self, x):
        """Appends the batch's rows (every process's, in rank order, under torch.distributed)
        until the buffer holds `buffer_size` rows; the rows past that are dropped."""
        rows = x.detach().cpu()
        d = _distributed()
        if d:
            world, _ = d
            count = torch.tensor([rows.shape[0]], dtype=torch.int64)
            counts = [torch.zeros_like(count) for _ in range(world)]
            torch.distributed.all_gather(counts, count)
            most = max(int(c) for c in counts)
            padded = torch.zeros(most, self.dim)
            padded[: rows.shape[0]] = rows
            gathered = [torch.empty_like(padded) for _ in range(world)]
            torch.distributed.all_gather(gathered, padded)
            rows = torch.cat([g[: int(c)] for g, c in zip(gathered, counts)])
        room = self.buffer_size - self._buffer.shape[0]
        if room > 0:
            self._buffer = torch.cat([self._buffer, rows[:room]])
        self._buffer_full = self._buffer.shape[0] >= self.buffer_size

    def _warm_start(self):
        """k-means (after OPQ with rotation="opq") on the buffer (the same rows on every
        process), run by process 0, whose result every process receives."""
        d = _distributed()
        rows = self._buffer
        rank = d[1] if d else 0
        coarse = torch.zeros_like(self.coarse_centroids, device="cpu")
        books = torch.zeros_like(self.codebooks, device="cpu")
        rotation = torch.eye(self.padded_dim)
        failure = None
        if rank == 0:
            try:
                codec = IvfPqCodec.train(
                    rows.numpy(), n_lists=self.n_lists, n_subspaces=self.n_subspaces,
                    n_bits=self.n_bits, opq=self.rotation_mode == "opq",
                    opq_rounds=self.opq_rounds, kmeans_iterations=self.kmeans_iterations,
                    seed=self.seed, threads=self.threads)
                coarse = torch.from_numpy(codec.coarse_centroids)
                books = torch.from_numpy(codec.codebooks)
                if self.rotation_mode == "opq":
                    rotation = torch.from_numpy(codec.rotation)
            except Exception as e:  # every process raises, none waits for a broadcast
                failure = e
        if d:
            status = torch.tensor([0 if failure is None else 1], dtype=torch.int64)
            torch.distributed.broadcast(status, src=0)
            if int(status) != 0:
                raise failure or InvalidArgumentError(
                    "the warm start failed on process 0 (see its error)")
            for t in (coarse, books, rotation):
                torch.distributed.broadcast(t, src=0)
        elif failure is not None:
            raise failure
        with torch.no_grad():
            self.coarse_centroids.copy_(coarse)
            self.codebooks.copy_(books)
            self.rotation.copy_(rotation)
            self.initialized.fill_(1)
        self._buffer = torch.zeros(0, self.dim)

    def _givens_step(self, rotated, dy):
        """One Givens step on `f(R) = w Σ ‖x R − z‖²`, codes fixed; under torch.distributed the
        skew gradient is averaged over the processes and process 0's step is broadcast."""
        skew = torch.from_numpy(givens_skew(rotated.cpu().numpy(), dy.cpu().numpy(),
                                            threads=self.threads))
        d = _distributed()
        if d:
            torch.distributed.all_reduce(skew)
            skew /= d[0]
        rank = d[1] if d else 0
        new = torch.empty(self.padded_dim, self.padded_dim)
        if rank == 0:
            new = torch.from_numpy(givens_step(
                self.rotation.detach().cpu().numpy(), skew.numpy(),
                selection=self.rotation_mode.removeprefix("givens-"),
                learning_rate=self.givens_learning_rate, max_angle=self.givens_max_angle,
                reorthonormalize_every=self.reorthonormalize_every,
                seed=(self.seed ^ _GIVENS_SALT) & (2 ** 64 - 1),
                steps=int(self.givens_steps), threads=self.threads))
        if d:
            torch.distributed.broadcast(new, src=0)
        self.rotation.copy_(new)
        self.givens_steps += 1

    # -- export -------------------------------------------------------------------------------

    def export(self, item_embeddings, ids, path, *, metric="ip", threads=None):
        """Writes a poeem index of `item_embeddings` (`(n, dim)`, a tensor or numpy array, the
        model's pre-quantization item vectors) with ids `ids`, encoded with the learned codec
        (no k-means): the file `poeem export` writes for the same codec and items, which
        `poeem.Index.open` and the `poeem` command search. Returns the `poeem.Index`.

        `metric="cosine"` normalises the items before encoding (its reconstructions are then
        τ(x/‖x‖)). Raises before the warm start."""
        self._require_initialized("export()")
        if isinstance(item_embeddings, torch.Tensor):
            if item_embeddings.dtype not in (torch.float32, torch.float64):
                raise InvalidArgumentError(
                    f"item_embeddings: expected a float32 tensor, got {item_embeddings.dtype}")
            item_embeddings = item_embeddings.detach().cpu().numpy()
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        if ids is not None:
            ids = np.asarray(ids)
        index = self.codec().index(item_embeddings, ids=ids, metric=metric,
                                   threads=threads if threads is not None else self.threads)
        index.save(path)
        return index
