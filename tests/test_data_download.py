"""Downloads against a local HTTP server: verified, atomic, and a clear error when offline."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading

import pytest
from omegaconf import OmegaConf

from lmbench.config import DatasetConfig
from lmbench.data.pipeline import load_corpus
from lmbench.data.tokenizers import WordTokenizer
from lmbench.errors import DataError

FILES = {"tiny.train.txt": "a b\nb c\n", "tiny.valid.txt": "a c\n", "tiny.test.txt": "b\n"}
SHA256 = {name: hashlib.sha256(text.encode()).hexdigest() for name, text in FILES.items()}


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields (base URL, list of requested paths)."""
    www = tmp_path / "www"
    www.mkdir()
    for name, text in FILES.items():
        (www / name).write_text(text, encoding="utf-8")
    requests: list[str] = []

    class Handler(_Handler):
        def do_GET(self):
            requests.append(self.path)
            if self.path.endswith("/cut.txt"):  # promises 1000 bytes, sends 10, hangs up
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"0123456789")
                self.close_connection = True
                return
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(www))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_data_dir(monkeypatch):
    # The files must not be found in a real data folder the test run may have set.
    monkeypatch.delenv("LMBENCH_DATA_DIR", raising=False)


def tiny(url: str, sha256: dict[str, str]):
    return OmegaConf.structured(
        DatasetConfig(
            name="tiny", subdir="tiny", train="tiny.train.txt", valid="tiny.valid.txt",
            test="tiny.test.txt", url=url, sha256=sha256,
        )
    )


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there any more: connection refused


def test_download_verified_into_cache_then_reused(server, cache_dir):
    url, requests = server
    data = load_corpus(tiny(url, SHA256), WordTokenizer(), cache_dir=cache_dir)
    folder = cache_dir / "corpora" / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert all((folder / n).read_text() == t for n, t in FILES.items())
    assert len(data.train) == 6 and len(requests) == 3
    load_corpus(tiny(url, SHA256), WordTokenizer(), cache_dir=cache_dir)
    assert len(requests) == 3  # found in the cache, not downloaded again


def test_wrong_checksum_is_refused_and_nothing_is_kept(server, cache_dir):
    url, _ = server
    bad = {**SHA256, "tiny.train.txt": "0" * 64}
    with pytest.raises(DataError, match=r"sha256 is .* not the expected 0000"):
        load_corpus(tiny(url, bad), WordTokenizer(), cache_dir=cache_dir)
    assert list((cache_dir / "corpora" / "tiny").iterdir()) == []


def test_missing_checksum_downloads_with_a_warning(server, cache_dir, caplog):
    url, _ = server
    load_corpus(tiny(url, {}), WordTokenizer(), cache_dir=cache_dir)
    assert "tiny.train.txt has no sha256" in caplog.text


def test_not_found_on_server_leaves_no_file(server, cache_dir):
    url, _ = server
    cfg = OmegaConf.merge(tiny(url, SHA256), {"test": "nope.txt"})
    with pytest.raises(DataError, match="nope.txt.*404"):
        load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    assert sorted(p.name for p in (cache_dir / "corpora" / "tiny").iterdir()) == [
        "tiny.train.txt", "tiny.valid.txt",
    ]


def test_transfer_cut_short_leaves_no_file(server, cache_dir):
    url, _ = server
    cfg = OmegaConf.merge(tiny(url, {}), {"train": "cut.txt"})
    with pytest.raises(DataError, match="Downloading .*cut.txt failed"):
        load_corpus(cfg, WordTokenizer(), cache_dir=cache_dir)
    assert list((cache_dir / "corpora" / "tiny").iterdir()) == []


def test_offline_error_says_where_to_put_the_files(cache_dir):
    url = closed_port_url()
    with pytest.raises(DataError) as info:
        load_corpus(tiny(url, SHA256), WordTokenizer(), cache_dir=cache_dir)
    message = str(info.value)
    assert "Cannot find tiny.train.txt, tiny.valid.txt, tiny.test.txt" in message
    assert f"Downloading {url}tiny.train.txt failed" in message
    assert str(cache_dir / "corpora" / "tiny") in message
    files = "tiny.train.txt, tiny.valid.txt, tiny.test.txt"
    assert f"put {files} into <folder>/tiny/ and set LMBENCH_DATA_DIR=<folder>" in message


def test_offline_error_with_a_data_dir_names_that_folder(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("LMBENCH_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    (tmp_path / "data" / "tiny" / "tiny.train.txt").write_text(FILES["tiny.train.txt"])
    with pytest.raises(DataError) as info:
        load_corpus(tiny(closed_port_url(), SHA256), WordTokenizer(), cache_dir=cache_dir)
    message = str(info.value)
    assert "Cannot find tiny.valid.txt, tiny.test.txt" in message  # train was found
    folder = tmp_path / "data" / "tiny"
    assert f"put tiny.valid.txt, tiny.test.txt into $LMBENCH_DATA_DIR/tiny/ (that is {folder})" in message


def test_no_url_error(cache_dir):
    with pytest.raises(DataError, match=r"No download URL is configured \(dataset.url\)"):
        load_corpus(tiny(None, {}), WordTokenizer(), cache_dir=cache_dir)


WIKITEXT103 = {"train": "= A =\n a <unk> b\n", "valid": " b a\n", "test": " a\n"}  # fake, tiny


def wikitext103_zip(www, members=("train", "valid", "test")) -> str:
    """A fake wikitext-103-v1.zip laid out as the real one; its sha256."""
    import zipfile

    path = www / "wikitext-103-v1.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("wikitext-103/", "")
        for split in members:
            zf.writestr(f"wikitext-103/wiki.{split}.tokens", WIKITEXT103[split])
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_wikitext103_archive_is_downloaded_checked_and_unpacked(server, compose_config, tmp_path, cache_dir):
    url, requests = server
    digest = wikitext103_zip(tmp_path / "www")
    dataset = OmegaConf.merge(compose_config("dataset=wikitext103", f"dataset.url={url}").dataset,
                              {"sha256": {"wikitext-103-v1.zip": digest}})
    assert dataset.archive == "wikitext-103-v1.zip" and dataset.unk_token == "<unk>"
    data = load_corpus(dataset, WordTokenizer(), cache_dir=cache_dir)
    folder = cache_dir / "corpora" / "wikitext-103"
    assert sorted(p.name for p in folder.iterdir()) == ["wiki.test.tokens", "wiki.train.tokens", "wiki.valid.tokens"]
    assert (folder / "wiki.valid.tokens").read_text() == WIKITEXT103["valid"]
    assert requests == ["/wikitext-103-v1.zip"] and data.vocab.decode(data.valid.ids) == ["b", "a", "<eos>"]
    load_corpus(dataset, WordTokenizer(), cache_dir=cache_dir)
    assert len(requests) == 1  # unpacked files found in the cache


def test_wikitext103_published_checksum_refuses_another_archive(server, compose_config, tmp_path, cache_dir):
    url, _ = server
    wikitext103_zip(tmp_path / "www")
    cfg = compose_config("dataset=wikitext103", f"dataset.url={url}")
    with pytest.raises(DataError, match=r"sha256 is [0-9a-f]{64}, not the expected 242ba0f20b32.*discarded"):
        load_corpus(cfg.dataset, WordTokenizer(), cache_dir=cache_dir)
    assert list((cache_dir / "corpora" / "wikitext-103").iterdir()) == []


def test_archive_without_a_split_file_says_what_it_holds(server, compose_config, tmp_path, cache_dir):
    url, _ = server
    digest = wikitext103_zip(tmp_path / "www", members=("train", "valid"))
    dataset = OmegaConf.merge(compose_config("dataset=wikitext103", f"dataset.url={url}").dataset,
                              {"sha256": {"wikitext-103-v1.zip": digest}})
    with pytest.raises(DataError, match=r"has no member named wiki.test.tokens; it holds wiki.train.tokens"):
        load_corpus(dataset, WordTokenizer(), cache_dir=cache_dir)


def test_wikitext103_offline_says_which_files_to_put_where(compose_config, cache_dir):
    url = closed_port_url()
    cfg = compose_config("dataset=wikitext103", f"dataset.url={url}")
    with pytest.raises(DataError) as info:
        load_corpus(cfg.dataset, WordTokenizer(), cache_dir=cache_dir)
    message = str(info.value)
    assert f"Downloading {url}wikitext-103-v1.zip failed" in message
    files = "wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens"
    assert f"put {files} into <folder>/wikitext-103/ and set LMBENCH_DATA_DIR=<folder>" in message
    assert f"they are in {url}wikitext-103-v1.zip; unzip it" in message
