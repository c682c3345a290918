"""Checkpoint download against a local HTTP server on 127.0.0.1: full, resumed, restarted, corrupt, folder."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import re
import threading
from pathlib import Path

import pytest

from fmtest.models import download as dl
from fmtest.models.registry import WEIGHTS, PinnedFile, WeightSpec

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at every path, honouring `Range: bytes=N-` unless the server says otherwise.

    `/redirect?to=URL` answers 302 to URL; `server.fault` set to "cut" sends a third of the body and
    closes, "cut_no_length" does so without a Content-Length, "from_zero" answers every Range request with a
    206 that restarts at byte 0.
    """

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Range")))
        if self.path.endswith("/missing"):
            self.send_error(404)
            return
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect?to="))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        fault, self.server.fault = self.server.fault, None  # a fault happens once; the retry is served well
        if fault == "cut":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.close_connection = True
            return
        if fault == "cut_no_length":  # no Content-Length: the end of the body is where the connection closes
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.close_connection = True
            return
        if fault == "from_zero" and self.headers.get("Range"):
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
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
        try:
            self.wfile.write(PAYLOAD[start:])
        except (BrokenPipeError, ConnectionResetError):  # the client refused the reply and left
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.requests, httpd.ranges, httpd.fault = [], True, None
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
    with pytest.raises(dl.DownloadError, match=f"the server offers {len(PAYLOAD)} bytes, the registry pins 5"):
        dl.fetch(server.url + "/model.pth", tmp_path / "a.pth", None, 5, progress=False)
    with pytest.raises(dl.DownloadError, match="HTTP 404") as e:
        dl.fetch(server.url + "/missing", tmp_path / "b.pth", None, None, progress=False)
    assert "/missing" in str(e.value)


def test_folder_entry_fetches_each_file_and_verifies_main(server, tmp_path):
    spec = WeightSpec(key="k", filename="hf-model", size=len(PAYLOAD), sha256=SHA, url=server.url + "/repo/",
                      license="t", description="t", main_file="model.safetensors",
                      files=(PinnedFile("config.json", len(PAYLOAD), SHA), PinnedFile("model.safetensors", len(PAYLOAD), SHA)))
    folder = dl.download(spec, tmp_path, progress=False)
    assert folder == tmp_path / "hf-model"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert [r[0] for r in server.requests] == ["/repo/config.json", "/repo/model.safetensors"]


def test_unreachable_server_is_a_download_error(tmp_path):
    with pytest.raises(dl.DownloadError, match="cannot connect"):
        dl.fetch("http://127.0.0.1:9/x", Path(tmp_path) / "x", None, None, progress=False, timeout=2)


def test_a_connection_closed_early_is_not_a_download_and_resumes(server, tmp_path):
    server.fault = "cut"
    dest = tmp_path / "config.json"
    with pytest.raises(dl.DownloadError, match=f"connection closed after {len(PAYLOAD) // 3} of {len(PAYLOAD)} bytes"):
        dl.fetch(server.url + "/config.json", dest, None, None, progress=False)  # nothing pinned to catch it later
    assert not dest.exists() and dest.with_name("config.json.part").stat().st_size == len(PAYLOAD) // 3
    dl.fetch(server.url + "/config.json", dest, None, None, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/config.json", f"bytes={len(PAYLOAD) // 3}-")


def test_a_206_that_restarts_at_byte_0_is_not_appended_to_the_part_file(server, tmp_path):
    server.fault = "from_zero"
    dest = tmp_path / "vocab.txt"
    dest.with_name("vocab.txt.part").write_bytes(PAYLOAD[:1000])
    dl.fetch(server.url + "/vocab.txt", dest, None, None, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/vocab.txt", "bytes=1000-"), ("/vocab.txt", None)]  # refused, then from scratch


def test_a_stale_part_file_longer_than_the_pinned_size_is_refused_and_removed(server, tmp_path):
    dest = tmp_path / "model.pth"
    dest.with_name("model.pth.part").write_bytes(PAYLOAD + b"stale tail")
    with pytest.raises(dl.DownloadError, match=f"expected {len(PAYLOAD)}"):
        dl.fetch(server.url + "/model.pth", dest, SHA, len(PAYLOAD), progress=False)
    assert not dest.with_name("model.pth.part").exists()


def test_a_416_on_resume_of_an_unpinned_file_starts_over_instead_of_keeping_the_stale_part(server, tmp_path):
    dest = tmp_path / "vocab.txt"
    dest.with_name("vocab.txt.part").write_bytes(PAYLOAD + b"stale tail from another version")
    dl.fetch(server.url + "/vocab.txt", dest, None, None, progress=False)  # no size, no hash pinned
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/vocab.txt", f"bytes={len(PAYLOAD) + 31}-"), ("/vocab.txt", None)]


def test_a_cut_without_content_length_is_not_taken_for_the_whole_file(server, tmp_path):
    server.fault = "cut_no_length"
    dest = tmp_path / "vocab.txt"
    with pytest.raises(dl.DownloadError, match=rf"vocab.txt: the server did not say how long the file is \(no "
                       rf"Content-Length\) and the registry pins no size or sha256 for it: {len(PAYLOAD) // 3} bytes"):
        dl.fetch(server.url + "/vocab.txt", dest, None, None, progress=False)
    assert not dest.exists() and not dest.with_name("vocab.txt.part").exists()


def test_the_sha256_prefix_in_a_file_name_is_checked_before_the_file_is_moved_into_place(server, tmp_path):
    spec = WeightSpec(key="cnn", filename=f"cnn-{SHA[:8]}.pth", size=None, sha256=None, url=server.url + "/cnn.pth",
                      license="t", description="t", sha256_prefix=SHA[:8])
    assert dl.download(spec, tmp_path, progress=False).read_bytes() == PAYLOAD
    server.fault = "cut_no_length"  # a cut the prefix catches: no Content-Length needed
    wrong = dataclasses.replace(spec, filename="cnn-deadbeef.pth", sha256_prefix="deadbeef")
    with pytest.raises(dl.DownloadError, match=r"cnn-deadbeef.pth: sha256 [0-9a-f]{16}\.\.\. does not start with "
                       r"deadbeef, the hash in its file name; the file was removed"):
        dl.download(wrong, tmp_path, progress=False)
    assert not (tmp_path / "cnn-deadbeef.pth").exists() and not (tmp_path / "cnn-deadbeef.pth.part").exists()


def test_torchvisions_files_carry_their_hash_prefix():
    for key in ("resnet50_imagenet", "wide_resnet50_2_imagenet"):
        spec = WEIGHTS[key]
        assert spec.filename == f"{spec.filename.rsplit('-', 1)[0]}-{spec.sha256_prefix}.pth"


def test_a_redirect_to_another_host_is_refused(server, tmp_path):
    elsewhere = server.url.replace("127.0.0.1", "localhost") + "/model.pth"
    with pytest.raises(dl.DownloadError, match=r"refused a redirect to another host \(localhost\)"):
        dl.fetch(f"{server.url}/redirect?to={elsewhere}", tmp_path / "model.pth", None, None, progress=False)
    assert [path for path, _ in server.requests] == [f"/redirect?to={elsewhere}"]
    dl.fetch(f"{server.url}/redirect?to={server.url}/model.pth", tmp_path / "model.pth", SHA, None, progress=False)
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD  # the same host is fine


def test_a_redirect_to_the_hosts_own_servers_is_followed(server, tmp_path, monkeypatch):
    monkeypatch.setitem(dl.TRUSTED_REDIRECTS, "127.0.0.1", ("127.0.0.1", "localhost"))
    elsewhere = server.url.replace("127.0.0.1", "localhost") + "/model.pth"
    dl.fetch(f"{server.url}/redirect?to={elsewhere}", tmp_path / "model.pth", SHA, None, progress=False)
    assert (tmp_path / "model.pth").read_bytes() == PAYLOAD


def test_the_grounding_dino_folder_is_pinned_to_a_revision_file_by_file():
    spec = WEIGHTS["groundingdino_swint_ogc"]
    assert re.search(r"/resolve/[0-9a-f]{40}/$", spec.url)
    assert {f.name for f in spec.files} >= {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"}
    assert all(f.size > 0 and re.fullmatch(r"[0-9a-f]{64}", f.sha256) for f in spec.files)
    main = next(f for f in spec.files if f.name == spec.main_file)
    assert (spec.size, spec.sha256) == (main.size, main.sha256)
