import numpy as np
import pytest

from cnnkit.data import datasets as data
from cnnkit.data.idx import read_idx, write_idx
from cnnkit.errors import DataError
from helpers import write_idx_dataset


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = write_idx(tmp_path / "x-idx3-ubyte", arr, compress)
    np.testing.assert_array_equal(read_idx(path), arr)


def test_idx_bad_magic(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(p)


def test_idx_truncated(tmp_path):
    p = write_idx(tmp_path / "x", np.zeros((3, 28, 28), np.uint8))
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_idx(p)


def test_idx_truncated_gzip(tmp_path):
    p = write_idx(tmp_path / "x", np.zeros((3, 28, 28), np.uint8), compress=True)
    p.write_bytes(p.read_bytes()[:20])
    with pytest.raises(DataError, match="cannot read"):
        read_idx(p)


def test_idx_missing(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope")


def test_idx_count_mismatch(tmp_path):
    d = write_idx_dataset(tmp_path / "d")
    write_idx(d / "train-labels-idx1-ubyte", np.zeros(10, np.uint8))
    with pytest.raises(DataError, match="10 labels for 64 images"):
        data.load_dataset(data_dir=d)


def test_idx_label_out_of_range(tmp_path):
    d = write_idx_dataset(tmp_path / "d")
    write_idx(d / "t10k-labels-idx1-ubyte", np.full(32, 12, np.uint8))
    with pytest.raises(DataError, match="label 12 out of range for 10 class names"):
        data.load_dataset("mnist", data_dir=d)


@pytest.mark.parametrize("compress", [False, True])
def test_local_idx_dir_flat(tmp_path, compress):
    d = write_idx_dataset(tmp_path / "d", compress=compress)
    ds = data.load_dataset(data_dir=d).dataset
    assert ds.name == "idx" and ds.train_images.shape == (64, 1, 28, 28) and ds.classes == data.DIGITS


def test_torchvision_layout_fashion(tmp_path):
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw")
    ds = data.load_dataset("fashion-mnist", data_dir=tmp_path).dataset
    assert ds.name == "fashion-mnist" and ds.classes[9] == "Ankle boot" and len(ds.test_labels) == 32


def test_sample_checksum_and_shape():
    ds = data.load_sample()
    assert ds.train_images.shape == (4000, 1, 28, 28) and ds.test_images.shape == (1000, 1, 28, 28)
    assert ds.train_images.dtype == np.uint8
    assert np.bincount(ds.test_labels).tolist() == [100] * 10


def test_sample_corrupt(tmp_path, monkeypatch):
    bad = tmp_path / "s.npz"
    import importlib.resources

    raw = bytearray((importlib.resources.files("cnnkit.resources") / "mnist_sample.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="checksum"):
        data.load_sample(bad)
    with pytest.raises(DataError, match="missing"):
        data.load_sample(tmp_path / "absent.npz")


def test_default_falls_back_to_sample_when_offline():
    def offline(name, root):
        raise DataError("could not download MNIST: no network")

    loaded = data.load_dataset(download=offline)
    assert loaded.dataset.name == "mnist-sample"
    assert "bundled" in loaded.warning and "no network" in loaded.warning


def test_explicit_dataset_offline_fails():
    def offline(name, root):
        raise DataError("offline")

    with pytest.raises(DataError, match="offline.*--data-dir"):
        data.load_dataset("fashion-mnist", download=offline)


def test_a_recorded_idx_folder_is_never_looked_for_under_the_working_directory(tmp_path, monkeypatch):
    """An export records only the folder's name: a folder of that name wherever the command runs is not read."""
    import pytest

    from cnnkit.data.datasets import load_idx_dir, load_recorded
    from cnnkit.errors import DataError

    write_idx_dataset(tmp_path / "idx")
    identity = load_idx_dir(tmp_path / "idx", "idx").identity()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"\(idx\) is not here; pass --data-dir"):
        load_recorded({**identity, "source": "idx"})
    assert load_recorded({**identity, "source": str(tmp_path / "idx")}).fingerprint == identity["sha256"]


def test_a_gzip_bomb_is_refused_from_its_header_and_decompressed_no_further(tmp_path):
    """A tiny .gz whose header declares more than MAX_IDX_BYTES, or whose data runs past its header's size."""
    import gzip
    import struct

    from cnnkit.data import idx

    huge = tmp_path / "huge.gz"
    huge.write_bytes(gzip.compress(b"\0\0\x08\x03" + struct.pack(">III", 100_000, 1000, 1000)))
    with pytest.raises(DataError, match="declares 100,000,000,000 bytes of data"):
        read_idx(huge)
    bomb = tmp_path / "bomb.gz"
    with gzip.open(bomb, "wb") as f:  # declares 4 bytes, then 64 MB of zeros (compressed to ~64 KB)
        f.write(b"\0\0\x08\x01" + struct.pack(">I", 4))
        for _ in range(64):
            f.write(b"\0" * 2**20)
    assert bomb.stat().st_size < 2**20
    with pytest.raises(DataError, match="has trailing bytes: more than 4 data bytes"):
        read_idx(bomb)
    assert idx.MAX_IDX_BYTES >= 2**30
