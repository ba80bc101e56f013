"""``bpfree download NAME --root ROOT --from PATH``: a local copy imported, checked against
the content digests bpfree pins, and written into the root only when every file matches.
On the tests' small fakes (their digests pinned for the test); the real Fashion-MNIST is in
tests/test_fashion_mnist.py."""

from __future__ import annotations

import gzip
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import CIFAR_TEST_ROWS, FASHION_TEST_ROWS

from bpfree.data import content, load_splits
from bpfree.data.checksums import file_digest, recorded

IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture
def pinned_fakes(monkeypatch, mnist_root, cifar_root):
    """Pin the fakes' digests, as the real datasets' are pinned."""
    raw = mnist_root / "FashionMNIST" / "raw"
    monkeypatch.setitem(content.IDX_SHA256, "FashionMNIST", {n: file_digest(raw / n) for n in IDX})
    base = cifar_root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    monkeypatch.setitem(content.CIFAR_MD5, "cifar-10-batches-py", {n: file_digest(base / n, "md5") for n in names})


def cli(capsys, *argv: str) -> tuple[int, str]:
    """``bpfree ARGV`` in this process (so that the pinned fakes count): exit code, stderr."""
    from bpfree.cli import main

    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def flat_gz_copy(mnist_root: Path, where: Path) -> Path:
    """Fashion-MNIST as Debian ships it: the four files gzipped (by another compressor than
    the originals'), flat in one folder."""
    where.mkdir(parents=True)
    for name in IDX:
        data = (mnist_root / "FashionMNIST" / "raw" / name).read_bytes()
        (where / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    return where


def import_into(root: Path, source: Path, dataset: str = "fashion-mnist"):
    from bpfree.core.registry import DATASETS

    DATASETS.get(dataset).import_from(root, source)


def test_a_flat_gzipped_copy_is_imported_extracted_and_recorded(tmp_path, mnist_root, pinned_fakes):
    source = flat_gz_copy(mnist_root, tmp_path / "debian")
    root = tmp_path / "root"
    import_into(root, source)
    for name in IDX:
        extracted = root / "FashionMNIST" / "raw" / name
        assert extracted.read_bytes() == (mnist_root / "FashionMNIST" / "raw" / name).read_bytes()
        assert recorded(root)[f"FashionMNIST/raw/{name}"] == ("sha256", file_digest(extracted))
    assert len(load_splits("fashion-mnist", root=root).test) == FASHION_TEST_ROWS


@pytest.mark.parametrize("layout", ["raw", "FashionMNIST/raw"])
def test_torchvisions_layout_is_found_too(tmp_path, mnist_root, pinned_fakes, layout):
    source = tmp_path / "copy"
    shutil.copytree(mnist_root / "FashionMNIST" / "raw", source / layout)
    import_into(tmp_path / "root", source)
    assert len(load_splits("fashion-mnist", root=tmp_path / "root").test) == FASHION_TEST_ROWS


def test_one_changed_byte_is_refused_in_one_line_and_the_root_is_left_as_it_was(
    tmp_path, mnist_root, pinned_fakes, capsys
):
    root = tmp_path / "root"
    import_into(root, flat_gz_copy(mnist_root, tmp_path / "good"))
    before = snapshot(root)
    bad = flat_gz_copy(mnist_root, tmp_path / "bad")
    labels = bytearray(gzip.decompress((bad / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[-1] ^= 0x01
    (bad / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    code, err = cli(capsys, "download", "fashion-mnist", "--root", str(root), "--from", str(bad))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert str(bad / "t10k-labels-idx1-ubyte.gz") in lines[0]
    assert f"expected {content.IDX_SHA256['FashionMNIST']['t10k-labels-idx1-ubyte']}" in lines[0]
    assert snapshot(root) == before
    # and into an empty root: nothing at all is created
    code, _ = cli(capsys, "download", "fashion-mnist", "--root", str(tmp_path / "fresh"), "--from", str(bad))
    assert code == 2 and not (tmp_path / "fresh").exists()


def test_a_refused_copy_names_the_expected_digest(tmp_path, mnist_root, pinned_fakes):
    from bpfree.data import DatasetCorrupt

    bad = flat_gz_copy(mnist_root, tmp_path / "bad")
    (bad / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03 not images"))
    with pytest.raises(DatasetCorrupt) as caught:
        import_into(tmp_path / "root", bad)
    assert content.IDX_SHA256["FashionMNIST"]["train-images-idx3-ubyte"] in str(caught.value)
    assert not (tmp_path / "root").exists()


def test_a_missing_file_says_what_the_folder_must_hold(tmp_path, mnist_root, pinned_fakes):
    from bpfree.core.errors import DatasetMissing

    source = flat_gz_copy(mnist_root, tmp_path / "copy")
    (source / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetMissing, match="no t10k-images-idx3-ubyte .*must hold train-images-idx3-ubyte"):
        import_into(tmp_path / "root", source)
    assert not (tmp_path / "root").exists()


def cifar_tar(cifar_root: Path, path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(cifar_root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path


def test_cifar_from_its_tar_gz_or_its_extracted_batches(tmp_path, cifar_root, pinned_fakes):
    archive = cifar_tar(cifar_root, tmp_path / "cifar-10-python.tar.gz")
    import_into(tmp_path / "a", archive, "cifar10")
    assert len(load_splits("cifar10", root=tmp_path / "a").test) == CIFAR_TEST_ROWS
    (tmp_path / "folder").mkdir()
    shutil.copy(archive, tmp_path / "folder")
    import_into(tmp_path / "b", tmp_path / "folder", "cifar10")  # a folder holding the archive
    shutil.copytree(cifar_root / "cifar-10-batches-py", tmp_path / "batches")
    import_into(tmp_path / "c", tmp_path / "batches", "cifar10")  # the extracted batches, flat
    for root in ("b", "c"):
        assert len(load_splits("cifar10", root=tmp_path / root).test) == CIFAR_TEST_ROWS


def test_a_cifar_tar_with_an_altered_batch_is_refused(tmp_path, cifar_root, pinned_fakes):
    from bpfree.data import DatasetCorrupt

    batches = tmp_path / "src" / "cifar-10-batches-py"
    shutil.copytree(cifar_root / "cifar-10-batches-py", batches)
    data = bytearray((batches / "data_batch_4").read_bytes())
    data[-10] ^= 0xFF
    (batches / "data_batch_4").write_bytes(bytes(data))
    archive = cifar_tar(tmp_path / "src", tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DatasetCorrupt, match="data_batch_4's md5 is .*, expected"):
        import_into(tmp_path / "root", archive, "cifar10")
    assert not (tmp_path / "root").exists()


def test_a_dataset_that_ships_with_its_package_has_nothing_to_import(tmp_path, capsys):
    code, err = cli(capsys, "download", "digits", "--root", str(tmp_path), "--from", str(tmp_path))
    assert code == 2 and "nothing to import" in err
    assert len(err.strip().splitlines()) == 1


def test_download_uses_a_recompressed_copy_in_the_root_without_the_network(tmp_path, mnist_root, pinned_fakes):
    """The user's first try: the archives copied into ROOT/FashionMNIST/raw/ (torchvision would
    reject their MD5 and go to the network); bpfree download finds and checks them instead."""
    import torchvision.datasets as tvd

    def no_network(*args, **kwargs):
        raise AssertionError("torchvision was asked to download")

    tvd.FashionMNIST.download, real = no_network, tvd.FashionMNIST.download
    try:
        flat_gz_copy(mnist_root, tmp_path / "FashionMNIST" / "raw")
        from bpfree.core.registry import DATASETS

        DATASETS.get("fashion-mnist").download(tmp_path)
    finally:
        tvd.FashionMNIST.download = real
    assert len(load_splits("fashion-mnist", root=tmp_path).test) == FASHION_TEST_ROWS


def test_an_offline_download_error_keeps_its_cause_on_one_line(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    from bpfree.core.errors import BpfreeError

    def offline(self):
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://x, got:\n"
            "<urlopen error [Errno -3] Temporary failure in name resolution>\n"
        )

    monkeypatch.setattr(tvd.MNIST, "download", offline)
    with pytest.raises(BpfreeError) as caught:
        load_splits("mnist", root=tmp_path, download=True)
    message = str(caught.value)
    assert "\n" not in message and not message.endswith(":")
    assert "Temporary failure in name resolution" in message
