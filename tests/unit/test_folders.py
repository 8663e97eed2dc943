"""Image folders as users have them: the loader's conventions, the split, the decoded cache and its key, the
geometry chosen from the data, and every bad-data rule (one line naming the file or folder, nothing half-written)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.data import datasets, folders, idx
from cnnkit.data.imagefolder import FolderOptions
from cnnkit.errors import DataError
from cnnkit.geometry import DEFAULT_SIDE, Geometry
from cnnkit.runtime import images


def make_tree(root: Path, classes=("cat", "dog"), n=6, size=(20, 20), mode="RGB", ext="png", seed=0) -> Path:
    """A class-per-folder tree of small images whose colour says the class."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            a = rng.integers(0, 60, shape).astype(np.uint8) + np.uint8(120 * k)
            Image.fromarray(a, mode).save(d / f"{i}.{ext}")
    return root


def load(root: Path, **kw):
    return datasets.load_dataset(data_dir=root, folder=FolderOptions(workers=1, **kw)).dataset


def test_class_folders_are_sorted_names_and_split_per_class_the_same_way_every_time(tmp_path):
    root = make_tree(tmp_path / "pets", classes=("dog", "cat", "bird"), n=10)
    (root / "cat" / "README.txt").write_text("not an image")  # ignored, as ImageFolder ignores it
    (root / ".hidden").mkdir()
    ds = load(root)
    assert ds.classes == ("bird", "cat", "dog") and ds.name == "pets"
    assert ds.train_images.shape == (24, 3, 20, 20) and ds.test_images.shape == (6, 3, 20, 20)
    assert np.bincount(ds.test_labels).tolist() == [2, 2, 2]  # 20% of each class
    again = folders.scan(root)
    assert again.test.paths == folders.scan(root).test.paths  # seeded: the same files each time
    assert "seeded per-class split" in ds.record["split"] and ds.record["kind"] == "image-folder"


def test_train_test_and_val_trees_keep_their_splits_and_labels(tmp_path):
    make_tree(tmp_path / "t" / "train", n=5)
    make_tree(tmp_path / "t" / "test", classes=("dog",), n=2)  # a test tree may lack a class, not add one
    make_tree(tmp_path / "t" / "val", n=1)
    ds = load(tmp_path / "t")
    assert (len(ds.train_labels), len(ds.test_labels), len(ds.val_labels)) == (10, 2, 2)
    assert set(ds.test_labels.tolist()) == {1} and ds.record["split"] == "folders"


def test_the_cache_is_reused_and_its_key_follows_the_files_and_the_geometry_asked_for(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "d")
    first = load(root)
    assert not first.train_images.flags.writeable  # memory-mapped, read-only
    calls = []
    monkeypatch.setattr("cnnkit.data.cache.build", lambda *a, **k: calls.append(1))
    second = load(root)
    assert not calls and second.fingerprint == first.fingerprint  # reused, not decoded again
    monkeypatch.undo()
    assert load(root, size=(16, 16)).train_images.shape[2:] == (16, 16)  # another geometry: another cache
    Image.new("RGB", (20, 20), (255, 0, 0)).save(root / "cat" / "0.png")
    os.utime(root / "cat" / "0.png", ns=(1, 1))
    assert load(root).fingerprint != first.fingerprint  # a changed file: decoded again


def test_geometry_is_chosen_from_the_data_and_said(tmp_path):
    said: list[str] = []
    gray = load(make_tree(tmp_path / "g", mode="L", size=(28, 28)), say=said.append)
    assert gray.geometry.shape == (1, 28, 28) and "grayscale" in " ".join(said)
    make_tree(tmp_path / "m", size=(40, 30))
    make_tree(tmp_path / "m", mode="L", size=(50, 50), n=2, ext="bmp", seed=1)  # gray among colour
    ds = load(tmp_path / "m", say=said.append)
    assert ds.geometry.shape == (3, DEFAULT_SIDE, DEFAULT_SIDE) and ds.geometry.invert == "never"
    line = next(line for line in said if line.startswith(f"decoding 16 images of {tmp_path / 'm'}"))
    assert "repeated in 3 channels" in line and "2 different sizes" in line
    assert load(tmp_path / "m", channels=1, size=(24, 24)).geometry.shape == (1, 24, 24)


def test_the_cache_holds_exactly_what_the_runtime_decodes_for_the_same_file(tmp_path):
    root = make_tree(tmp_path / "d", size=(45, 30), ext="jpg")
    ds = load(root, size=(16, 16))
    tree = folders.scan(root)
    geometry = Geometry(channels=3, height=16, width=16, resize="shorter-crop", invert="never")
    for row, path in enumerate(tree.train.paths[:3]):
        np.testing.assert_array_equal(ds.train_images[row], images.load(path, geometry).pixels)


def test_a_one_channel_light_on_dark_set_keeps_mnists_auto_invert_and_a_dark_on_light_one_does_not(tmp_path):
    light_on_dark = make_tree(tmp_path / "a", mode="L", size=(28, 28))  # values < 180: a dark border
    assert load(light_on_dark).geometry.invert == "auto"
    root = tmp_path / "b"
    for k in ("x", "y"):
        (root / k).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (28, 28), 250 - 20 * i).save(root / k / f"{i}.png")
    assert load(root).geometry.invert == "never"


def _truncated(path: Path) -> None:
    Image.new("RGB", (64, 64), (9, 9, 9)).save(path)
    path.write_bytes(path.read_bytes()[:60])


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda r: [p.unlink() for p in (r / "dog").iterdir()], "dog: class folder holds no images"),
        (lambda r: [p.unlink() for p in (r / "dog").iterdir()] and (r / "dog").rmdir(), "one class folder .cat."),
        (lambda r: (r / "cat" / "fake.png").write_text("hello"), "fake.png: not a recognised image"),
        (lambda r: _truncated(r / "cat" / "cut.png"), "cut.png: "),
        (lambda r: (r / "cat" / "loop").symlink_to(r), "symbolic link loops"),
    ],
    ids=["empty-class", "one-class", "not-an-image", "truncated", "symlink-loop"],
)
def test_bad_trees_are_refused_in_one_line_naming_what_is_wrong_and_leave_no_cache(tmp_path, spoil, message):
    root = make_tree(tmp_path / "d")
    spoil(root)
    with pytest.raises(DataError, match=message) as err:
        load(root)
    assert "\n" not in str(err.value)
    cache = Path(os.environ["CNNKIT_DATA_DIR"]) / "images"
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-written


def test_a_tree_with_no_images_or_no_class_folders_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither IDX files .* nor class folders"):
        load(tmp_path / "empty")
    make_tree(tmp_path / "t" / "train")
    with pytest.raises(DataError, match="has train/ but no test/"):
        load(tmp_path / "t")


def test_test_classes_that_training_lacks_and_too_many_classes_are_refused(tmp_path, monkeypatch):
    make_tree(tmp_path / "t" / "train")
    make_tree(tmp_path / "t" / "test", classes=("cat", "cow"))
    with pytest.raises(DataError, match="cow.*not among the training classes"):
        load(tmp_path / "t")
    monkeypatch.setattr(folders, "MAX_CLASSES", 2)
    with pytest.raises(DataError, match="3 class folders; a model may have at most 2"):
        load(make_tree(tmp_path / "many", classes=("a", "b", "c")))


def test_skip_bad_leaves_bad_files_out_counts_and_records_them(tmp_path):
    root = make_tree(tmp_path / "d")
    (root / "cat" / "fake.jpg").write_text("hello")
    _truncated(root / "dog" / "cut.png")
    said: list[str] = []
    ds = load(root, skip_bad=True, say=said.append)
    assert len(ds.train_labels) + len(ds.test_labels) == 12
    assert ds.record["skipped"] == 2 and any("fake.jpg" in f for f in ds.record["skipped_files"])
    assert any("skipped 2 file(s)" in line for line in said)


def test_an_image_bomb_in_a_folder_is_refused_from_its_header(tmp_path):
    root = make_tree(tmp_path / "d")
    Image.new("L", (4200, 4200), 0).save(root / "cat" / "big.png")  # 17.6 MP in a few kilobytes
    with pytest.raises(DataError, match="big.png: 4200x4200 image has 17,640,000 pixels; the limit is 16,777,216"):
        load(root)


@pytest.mark.parametrize("dotted, gz", [(True, False), (True, True), (False, True)])
def test_idx_files_load_under_every_name_real_copies_use(tmp_path, dotted, gz):
    x = np.zeros((4, 28, 28), np.uint8)
    x[:, 5:9, 5:9] = 200
    y = np.array([0, 1, 0, 1], np.uint8)
    for stem, arr in zip(idx.FILES, (x, y, x, y)):
        name = stem.replace("-idx", ".idx") if dotted else stem
        idx.write_idx(tmp_path / name, arr, compress=gz)
    ds = datasets.load_dataset(data_dir=tmp_path).dataset
    assert ds.train_images.shape == (4, 1, 28, 28) and ds.name == "idx"


def test_an_explicit_data_dir_never_falls_back_to_other_data(tmp_path):
    (tmp_path / "train-images.idx3-ubytes").write_bytes(b"typo")
    with pytest.raises(DataError, match="neither IDX files"):
        datasets.load_dataset(data_dir=tmp_path)


def test_a_folder_recorded_in_a_checkpoint_is_found_again_and_checked(tmp_path):
    root = make_tree(tmp_path / "d")
    ds = load(root)
    identity = json.loads(json.dumps(ds.identity()))
    again = datasets.load_recorded(identity)
    assert again.fingerprint == ds.fingerprint and again.geometry == ds.geometry
    exported = {**identity, "source": "d"}  # an export records the folder's name only
    with pytest.raises(DataError, match="pass --data-dir"):
        datasets.load_recorded(exported)
    assert datasets.load_recorded(exported, root).fingerprint == ds.fingerprint
