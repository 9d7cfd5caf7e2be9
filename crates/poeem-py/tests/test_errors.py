"""Bad input raises a named Python exception whose message names the problem; nothing crashes
the interpreter. Ctrl-C interrupts a long build."""

import _thread
import os
import signal
import threading
import time

import numpy as np
import pytest

import poeem
from conftest import clustered


@pytest.fixture(scope="module")
def index(xb):
    return poeem.build_index(xb, n_lists=8, n_subspaces=6, n_bits=6, seed=0)


def test_exception_classes():
    assert issubclass(poeem.InvalidArgumentError, ValueError)
    assert issubclass(poeem.InvalidArgumentError, poeem.PoeemError)
    assert issubclass(poeem.CorruptIndexError, poeem.PoeemError)


BAD_QUERIES = [
    (np.zeros((2, 24), np.int32), "float32 or float64.*int32|float32 or float64.*i4"),
    (np.zeros((2, 24), np.float16), "float32 or float64"),
    (np.zeros((2, 24), np.complex64), "float32 or float64"),
    (np.zeros(24, np.float32), "2-D.*reshape"),
    (np.zeros((2, 3, 24), np.float32), "2-D"),
    (np.zeros((2, 23), np.float32), "expected 24 columns.*got 23"),
    ([[0.0] * 24], "numpy array, got list"),
    ("queries", "numpy array, got str"),
]


@pytest.mark.parametrize("xq,message", BAD_QUERIES)
def test_bad_queries(index, xq, message):
    with pytest.raises(poeem.InvalidArgumentError, match=message):
        index.search(xq, 5)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_located(index, xb, value):
    xq = np.zeros((5000, 24), np.float32)  # more than one interrupt-check chunk
    xq[4500, 7] = value
    with pytest.raises(poeem.InvalidArgumentError, match="row 4500, column 7"):
        index.search(xq, 5)
    bad = xb.copy()
    bad[3, 5] = value
    with pytest.raises(poeem.InvalidArgumentError, match="row 3, column 5"):
        poeem.build_index(bad, n_lists=4, n_subspaces=4)


@pytest.mark.parametrize("kwargs,message", [
    ({"k": 0}, "k = 0"),
    ({"nprobe": 0}, "nprobe = 0"),
    ({"threads": 0}, "threads = 0"),
])
def test_bad_search_arguments(index, xb, kwargs, message):
    args = {"k": 5, **kwargs}
    k = args.pop("k")
    with pytest.raises(poeem.InvalidArgumentError, match=message):
        index.search(xb[:2], k, **args)


def test_negative_k_or_nprobe_is_a_python_error(index, xb):
    with pytest.raises(OverflowError):
        index.search(xb[:2], -1)
    with pytest.raises(OverflowError):
        index.search(xb[:2], 5, nprobe=-3)


@pytest.mark.parametrize("kwargs,message", [
    ({"metric": "hamming"}, "metric = hamming"),
    ({"n_subspaces": 25}, "n_subspaces = 25.*dimension"),
    ({"n_subspaces": 0}, "n_subspaces = 0"),
    ({"n_bits": 17}, "n_bits = 17"),
    ({"n_lists": 5000}, "n_lists = 5000"),
    ({"ids": np.arange(10)}, "10 ids for 3000 vectors"),
    ({"ids": -np.arange(3000)}, "id -1 at row 1 is negative"),
    ({"ids": np.arange(3000, dtype=np.float64)}, "integer dtype"),
    ({"ids": np.full(3000, 2**64 - 1, dtype=np.uint64)}, "does not fit int64"),
    ({"ids": np.zeros((3000, 2), np.int64)}, "1-D array of ids"),
    ({"threads": 0}, "threads = 0"),
])
def test_bad_build_arguments(xb, kwargs, message):
    args = {"n_lists": 8, "n_subspaces": 6, **kwargs}
    with pytest.raises(poeem.InvalidArgumentError, match=message):
        poeem.build_index(xb, **args)


def test_empty_or_degenerate_build_input():
    with pytest.raises(poeem.InvalidArgumentError, match="xb is empty"):
        poeem.build_index(np.zeros((0, 8), np.float32), n_lists=1, n_subspaces=2)
    with pytest.raises(poeem.InvalidArgumentError, match="dimension 0"):
        poeem.build_index(np.zeros((10, 0), np.float32), n_lists=1, n_subspaces=1)
    with pytest.raises(poeem.InvalidArgumentError, match="zero|norm"):
        poeem.build_index(np.zeros((300, 8), np.float32), n_lists=1, n_subspaces=2,
                          n_bits=4, metric="cosine")
    with pytest.raises(TypeError):
        poeem.build_index(np.zeros((300, 8), np.float32), n_subspaces=2)  # n_lists is required


def test_reconstruct_errors(index):
    with pytest.raises(poeem.InvalidArgumentError, match="id 99999 is not in the index"):
        index.reconstruct(99999)
    with pytest.raises(poeem.InvalidArgumentError, match="id -1 is not in the index"):
        index.reconstruct(-1)
    with pytest.raises(poeem.InvalidArgumentError, match="id 5000 is not in the index"):
        index.reconstruct(np.array([1, 5000]))
    with pytest.raises(poeem.InvalidArgumentError, match="integer dtype"):
        index.reconstruct(np.array([1.0]))
    assert index.reconstruct(np.array([], np.int64)).shape == (0, 24)


def test_io_errors(tmp_path, index):
    with pytest.raises(FileNotFoundError) as raised:
        poeem.Index.open(tmp_path / "missing.poeem")
    assert raised.value.filename == str(tmp_path / "missing.poeem")
    with pytest.raises(FileNotFoundError):
        poeem.Index.read(tmp_path / "missing.poeem")
    with pytest.raises(OSError):
        poeem.Index.open(tmp_path)  # a directory
    with pytest.raises(OSError):
        index.save(tmp_path / "no" / "such" / "dir.poeem")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_files(tmp_path, index):
    path = tmp_path / "a.poeem"
    index.save(path)
    data = path.read_bytes()
    (tmp_path / "garbage").write_bytes(b"not an index at all" * 10)
    with pytest.raises(poeem.CorruptIndexError, match="not a poeem index"):
        poeem.Index.open(tmp_path / "garbage")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(poeem.CorruptIndexError):
        poeem.Index.read(tmp_path / "empty")
    for cut in (10, 100, len(data) // 2, len(data) - 1):
        (tmp_path / "cut").write_bytes(data[:cut])
        for how in (poeem.Index.open, poeem.Index.read):
            with pytest.raises(poeem.CorruptIndexError):
                how(tmp_path / "cut")
    # A changed code byte near the end: opening (which never reads the codes) succeeds,
    # verify() finds it.
    flipped = bytearray(data)
    flipped[-200] ^= 0xFF
    (tmp_path / "flipped").write_bytes(bytes(flipped))
    try:
        opened = poeem.Index.open(tmp_path / "flipped")
    except poeem.CorruptIndexError:
        return
    with pytest.raises(poeem.CorruptIndexError, match="CRC-32|code"):
        opened.verify()


def test_every_byte_changed_gives_an_error_or_an_index(tmp_path):
    small = poeem.build_index(clustered(40, 4, seed=3), n_lists=2, n_subspaces=2, n_bits=2)
    path = tmp_path / "small.poeem"
    small.save(path)
    data = path.read_bytes()
    for at in range(0, len(data), 7):
        changed = bytearray(data)
        changed[at] ^= 0x5A
        (tmp_path / "c").write_bytes(bytes(changed))
        try:
            opened = poeem.Index.read(tmp_path / "c")
        except poeem.CorruptIndexError:
            continue
        try:
            opened.verify()
        except poeem.CorruptIndexError:
            pass
        opened.search(np.ones((2, 4), np.float32), 3, nprobe=2)


class Interrupter:
    """Presses Ctrl-C after `delay` seconds, then again every `delay` seconds until stopped.
    Python's own SIGINT handler is installed for the duration: a process started in the
    background by a non-interactive shell inherits SIGINT ignored, and then `interrupt_main`
    does nothing (the test hung that way when CI was started with `&`)."""

    def __init__(self, delay):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, args=(delay,), daemon=True)
        self.previous = None

    def run(self, delay):
        while not self.stop.wait(delay):
            _thread.interrupt_main()

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        signal.signal(signal.SIGINT, self.previous)


def test_progress_is_shown_on_stderr(capfd, xb):
    poeem.build_index(xb, n_lists=8, n_subspaces=6, progress=True, kmeans_iterations=3)
    err = capfd.readouterr().err
    assert "coarse k-means" in err and "PQ k-means 6/6" in err


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals reach the main thread only")
def test_ctrl_c_interrupts_a_long_build(tmp_path):
    xb = clustered(20000, 32, seed=4)
    start = time.monotonic()
    with Interrupter(0.5), pytest.raises(KeyboardInterrupt):
        index = poeem.build_index(xb, n_lists=64, n_subspaces=8, opq=True, opq_rounds=100000,
                                  kmeans_iterations=50)
        index.save(tmp_path / "never.poeem")
    assert time.monotonic() - start < 60
    assert not os.listdir(tmp_path)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals reach the main thread only")
def test_ctrl_c_interrupts_a_long_search(index):
    queries = clustered(400_000, 24, seed=6)  # about 10 s at nprobe = n_lists on one thread
    start = time.monotonic()
    with Interrupter(0.3), pytest.raises(KeyboardInterrupt):
        index.search(queries, 10, nprobe=index.n_lists, threads=1)
    assert time.monotonic() - start < 5
