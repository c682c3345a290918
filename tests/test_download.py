"""Checkpoint download against a local HTTP server on 127.0.0.1: full, resumed, restarted, corrupt, folder."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from fmtest.models import download as dl
from fmtest.models.registry import WeightSpec

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at every path, honouring `Range: bytes=N-` unless the server says otherwise."""

    def do_GET(self):  # noqa: N802 (http.server API)
        self.server.requests.append((self.path, self.headers.get("Range")))
        if self.path.endswith("/missing"):
            self.send_error(404)
            return
        start = 0
        range_header = self.headers.get("Range")
        if range_header and self.server.ranges:
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            if start >= len(PAYLOAD):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD) - start))
        self.end_headers()
        self.wfile.write(PAYLOAD[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.requests, httpd.ranges = [], True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_full_download_verifies_and_renames(server, tmp_path):
    dest = tmp_path / "w" / "model.pth"
    assert dl.fetch(server.url + "/model.pth", dest, SHA, len(PAYLOAD), progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("model.pth.part").exists()
    dl.fetch(server.url + "/model.pth", dest, SHA, len(PAYLOAD), progress=False)
    assert len(server.requests) == 1  # a verified file is not fetched again


def test_resume_requests_only_the_missing_bytes(server, tmp_path):
    dest = tmp_path / "model.pth"
    dest.with_name("model.pth.part").write_bytes(PAYLOAD[:300_000])
    dl.fetch(server.url + "/model.pth", dest, SHA, len(PAYLOAD), progress=False)
    assert server.requests == [("/model.pth", "bytes=300000-")]
    assert dest.read_bytes() == PAYLOAD


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    server.ranges = False
    dest = tmp_path / "model.pth"
    dest.with_name("model.pth.part").write_bytes(b"stale bytes")
    dl.fetch(server.url + "/model.pth", dest, SHA, None, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_complete_partial_file_is_verified_without_refetch(server, tmp_path):
    dest = tmp_path / "model.pth"
    dest.with_name("model.pth.part").write_bytes(PAYLOAD)
    dl.fetch(server.url + "/model.pth", dest, SHA, None, progress=False)  # server answers 416
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_removes_file_and_names_it(server, tmp_path):
    dest = tmp_path / "model.pth"
    with pytest.raises(dl.DownloadError, match="sha256 mismatch") as e:
        dl.fetch(server.url + "/model.pth", dest, "f" * 64, None, progress=False)
    assert str(dest) in str(e.value)
    assert not dest.exists() and not dest.with_name("model.pth.part").exists()


def test_size_mismatch_and_http_errors(server, tmp_path):
    with pytest.raises(dl.DownloadError, match="expected 5"):
        dl.fetch(server.url + "/model.pth", tmp_path / "a.pth", None, 5, progress=False)
    with pytest.raises(dl.DownloadError, match="HTTP 404") as e:
        dl.fetch(server.url + "/missing", tmp_path / "b.pth", None, None, progress=False)
    assert "/missing" in str(e.value)


def test_folder_entry_fetches_each_file_and_verifies_main(server, tmp_path):
    spec = WeightSpec(key="k", filename="hf-model", size=len(PAYLOAD), sha256=SHA, url=server.url + "/repo/",
                      license="t", description="t", main_file="model.safetensors",
                      files=("config.json", "model.safetensors"))
    folder = dl.download(spec, tmp_path, progress=False)
    assert folder == tmp_path / "hf-model"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert [r[0] for r in server.requests] == ["/repo/config.json", "/repo/model.safetensors"]


def test_unreachable_server_is_a_download_error(tmp_path):
    with pytest.raises(dl.DownloadError, match="cannot connect"):
        dl.fetch("http://127.0.0.1:9/x", Path(tmp_path) / "x", None, None, progress=False, timeout=2)
