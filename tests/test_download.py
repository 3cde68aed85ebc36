"""Downloading CIFAR-100 when files are missing, from a local file or a local HTTP server.

Nothing here touches the internet: a small archive in the official layout is
built in a temporary folder, and ``ARCHIVE_MD5``/``FILE_MD5`` are patched to
its checksums, so the code under test treats it as the official one.
"""

import http.server
import os
import pickle
import socket
import struct
import tarfile
import threading
from types import SimpleNamespace

import pytest

from fake_cifar import FINE_NAMES, write_fake_cifar
from network import data_utils
from network.core.errors import LabError
from network.core.files import file_digest
from network.data_utils import ensure_dataset, load_cifar100

NAMES = ("meta", "train", "test")


def make_archive(path, seed=0):
    """A .tar.gz holding cifar-100-python/{meta,train,test}, like the official archive."""
    src = write_fake_cifar(path.parent / f"src-{path.name}", n_train=100, n_test=100, seed=seed)
    with tarfile.open(path, "w:gz") as tar:
        for name in NAMES:
            tar.add(src / name, arcname=f"cifar-100-python/{name}")
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    path = make_archive(root / "cifar-100-python.tar.gz")
    src = root / "src-cifar-100-python.tar.gz"
    return SimpleNamespace(path=path, url=path.as_uri(), src=src, data=path.read_bytes(),
                           md5=file_digest(path, "md5"),
                           files={name: file_digest(src / name, "md5") for name in NAMES})


@pytest.fixture
def official(monkeypatch, archive):
    """Make the test archive pass for the official one."""
    monkeypatch.setattr(data_utils, "ARCHIVE_MD5", archive.md5)
    monkeypatch.setattr(data_utils, "FILE_MD5", dict(archive.files))
    return archive


@pytest.fixture
def folder(tmp_path):
    """An existing, empty data folder."""
    path = tmp_path / "data"
    path.mkdir()
    return path


def assert_nothing_placed(folder):
    """No data file and no temporary leftover (.download-*) in ``folder``."""
    assert os.listdir(folder) == []


def assert_placed(folder, archive):
    assert sorted(os.listdir(folder)) == sorted(NAMES)  # and no .download-* leftovers
    for name in NAMES:
        assert (folder / name).read_bytes() == (archive.src / name).read_bytes()


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- A local HTTP server ----------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    """Serves the archive whole, cut short, reset mid-transfer, or stalled."""

    payloads = {}
    release = threading.Event()

    def do_GET(self):
        body = self.payloads.get(self.path.split("/")[1])
        if body is None:
            self.send_error(404)
            return
        mode = self.path.split("/")[2] if self.path.count("/") > 1 else "whole"
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        if mode != "nolength":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "whole":
            self.wfile.write(body)
            return
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if mode == "reset":  # the server dies: the connection is reset, not closed
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        elif mode == "stall":
            self.release.wait(30)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(archive, tmp_path_factory):
    other = make_archive(tmp_path_factory.mktemp("other") / "other.tar.gz", seed=5)
    Handler.payloads = {"good": archive.data, "other": other.read_bytes()}
    Handler.release.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        Handler.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


# --- Successful downloads ---------------------------------------------------------------

def test_download_from_file_url(official, tmp_path):
    data = load_cifar100(tmp_path / "new" / "data", origin=official.url)
    assert_placed(tmp_path / "new" / "data", official)
    assert len(data.x_train) == 100 and data.fine_names == FINE_NAMES
    assert socket.getdefaulttimeout() is None  # the download timeout was put back


def test_download_over_http_named_by_env(official, server, folder, monkeypatch, capsys):
    monkeypatch.setenv("CIFAR100_URL", f"{server}/good")
    data = load_cifar100(folder)
    assert_placed(folder, official)
    assert data.x_test.shape == (100, 32, 32, 3)
    assert f"downloading {server}/good" in capsys.readouterr().out


def test_only_missing_files_are_placed(official, folder):
    # The user's own meta (other names) stays; only train and test come from the archive.
    write_fake_cifar(folder, n_train=100, n_test=100, seed=3)
    own_meta = {"fine_label_names": FINE_NAMES[::-1],
                "coarse_label_names": [f"s{i}" for i in range(20)]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(own_meta, f, protocol=2)
    before = (folder / "meta").read_bytes(), (folder / "test").read_bytes()
    (folder / "train").unlink()
    ensure_dataset(folder, origin=official.url)
    assert ((folder / "meta").read_bytes(), (folder / "test").read_bytes()) == before
    assert (folder / "train").read_bytes() == (official.src / "train").read_bytes()
    assert sorted(os.listdir(folder)) == sorted(NAMES)
    data = load_cifar100(folder, allow_md5_mismatch=True)
    assert data.fine_names == FINE_NAMES[::-1]


def test_nothing_missing_means_no_download(official, folder):
    for name in NAMES:
        (folder / name).write_bytes((official.src / name).read_bytes())
    ensure_dataset(folder, origin=f"http://127.0.0.1:{closed_port()}/never")
    assert_placed(folder, official)


# --- Failed downloads leave nothing behind ------------------------------------------------

def test_wrong_md5_archive(official, server, folder):
    for origin in (f"{server}/other", make_archive(folder.parent / "x.tar.gz", 7).as_uri()):
        with pytest.raises(LabError, match="has MD5 .*not the official") as err:
            ensure_dataset(folder, origin=origin)
        assert origin in str(err.value) and str(folder) in str(err.value)
        assert_nothing_placed(folder)


def test_wrong_md5_archive_without_patching(archive, folder):
    # Unpatched, the test archive is not the official CIFAR-100: refused.
    with pytest.raises(LabError, match="not the official eb9058c3a382ffc7106e4002c42a8d85"):
        ensure_dataset(folder, origin=archive.url)
    assert_nothing_placed(folder)


@pytest.mark.parametrize("mode", ["cut", "nolength", "reset"])
def test_server_dies_mid_transfer(official, server, folder, mode):
    with pytest.raises(LabError, match="incomplete|reset") as err:
        ensure_dataset(folder, origin=f"{server}/good/{mode}")
    assert "Run again to retry" in str(err.value) and str(folder) in str(err.value)
    assert_nothing_placed(folder)


def test_stalled_server_times_out(official, server, folder, monkeypatch):
    monkeypatch.setattr(data_utils, "DOWNLOAD_TIMEOUT_S", 0.5)
    with pytest.raises(LabError, match="timed out"):
        ensure_dataset(folder, origin=f"{server}/good/stall")
    assert_nothing_placed(folder)
    assert socket.getdefaulttimeout() is None


def test_truncated_archive_with_matching_md5(official, folder, monkeypatch):
    # Even if a cut archive got past the MD5 check, no partial file is placed.
    cut = folder.parent / "cut.tar.gz"
    cut.write_bytes(official.data[: len(official.data) * 2 // 3])
    monkeypatch.setattr(data_utils, "ARCHIVE_MD5", file_digest(cut, "md5"))
    with pytest.raises(LabError, match="could not be unpacked"):
        ensure_dataset(folder, origin=cut.as_uri())
    assert_nothing_placed(folder)


def test_not_an_archive(official, folder, monkeypatch):
    junk = folder.parent / "junk.tar.gz"
    junk.write_bytes(b"<html>captive portal</html>")
    monkeypatch.setattr(data_utils, "ARCHIVE_MD5", file_digest(junk, "md5"))
    with pytest.raises(LabError, match="could not be unpacked"):
        ensure_dataset(folder, origin=junk.as_uri())
    assert_nothing_placed(folder)


def test_interrupted_download_leaves_nothing(official, folder, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("keras.utils.get_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_dataset(folder, origin=official.url)
    assert_nothing_placed(folder)


# --- No network, no folder: clear messages -------------------------------------------------

@pytest.mark.parametrize("where", ["closed port", "404", "missing file"])
def test_unreachable_url_says_where_to_put_the_files(server, folder, tmp_path, where):
    origin = {"closed port": f"http://127.0.0.1:{closed_port()}/cifar-100-python.tar.gz",
              "404": f"{server}/absent.tar.gz",
              "missing file": (tmp_path / "absent.tar.gz").as_uri()}[where]
    with pytest.raises(LabError, match="could not download CIFAR-100") as err:
        load_cifar100(folder, origin=origin)
    message = str(err.value)
    assert f"put the files 'meta', 'train' and 'test' in {folder}" in message
    assert data_utils.ARCHIVE_URL in message and "\n" not in message
    assert_nothing_placed(folder)


def test_failed_download_keeps_other_files(folder, tmp_path, monkeypatch):
    write_fake_cifar(folder, n_train=100, n_test=100)
    (folder / "train").unlink()
    before = {name: (folder / name).read_bytes() for name in ("meta", "test")}
    monkeypatch.setenv("CIFAR100_URL", (tmp_path / "absent.tar.gz").as_uri())
    with pytest.raises(LabError, match="could not download"):
        load_cifar100(folder, allow_md5_mismatch=True)
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(folder)) == ["meta", "test"]


def test_failed_download_leaves_no_new_folders(tmp_path):
    target = tmp_path / "typo" / "deeper" / "data"
    with pytest.raises(LabError, match="could not download"):
        ensure_dataset(target, origin=(tmp_path / "absent.tar.gz").as_uri())
    assert os.listdir(tmp_path) == []


def test_uncreatable_data_folder(tmp_path, archive):
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(LabError, match="cannot write to the data folder") as err:
        ensure_dataset(tmp_path / "file" / "data", origin=archive.url)
    assert str(tmp_path / "file" / "data") in str(err.value)
    assert "--data-dir" in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever a folder's mode")
def test_read_only_data_folder(folder, archive):
    folder.chmod(0o555)
    try:
        with pytest.raises(LabError, match="cannot write to the data folder"):
            ensure_dataset(folder, origin=archive.url)
    finally:
        folder.chmod(0o755)
    assert_nothing_placed(folder)


def test_damaged_gzip_stream(official, folder, monkeypatch):
    # Valid at first, garbage later: the decompressor fails midway through.
    bad = folder.parent / "bad.tar.gz"
    bad.write_bytes(official.data[:200] + bytes(range(256)) * 40)
    monkeypatch.setattr(data_utils, "ARCHIVE_MD5", file_digest(bad, "md5"))
    with pytest.raises(LabError, match="could not be unpacked"):
        ensure_dataset(folder, origin=bad.as_uri())
    assert_nothing_placed(folder)


def test_unwritable_data_folder(folder, archive, monkeypatch):
    # The same check as above, also under root: no temporary folder can be made there.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(data_utils.tempfile, "mkdtemp", refuse)
    with pytest.raises(LabError, match=r"cannot write to the data folder .* \(Permission denied\)"):
        ensure_dataset(folder, origin=archive.url)
    assert_nothing_placed(folder)
