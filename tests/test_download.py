"""weights="imagenet": the cache order and the download, against a real HTTP server on 127.0.0.1.

The server runs in a thread of the test process and serves, under different URL prefixes, a valid
weights file, a 404, a truncated body, a body that is not HDF5, a valid HDF5 file of the wrong
model, and a body without Content-Length. No test touches the network or the user's caches
(KERAS_HOME, MNV2REF_HOME point into tmp_path).
"""
import http.server
import io
import os
import socket
import threading

import numpy as np
import pytest

import mnv2ref
from mnv2ref import arch, convert, download

from h5tools import layers_from_raw, write_legacy

NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
NAME_224 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
KW = dict(weights="imagenet", alpha=0.35, include_top=False, input_shape=(96, 96, 3))


def weights_bytes(alpha, seed=7):
    buf = io.BytesIO()
    write_legacy(buf, layers_from_raw(convert.random_raw(alpha, False, seed=seed), arch.layers(alpha, (96, 96), False)))
    return buf.getvalue()


class Server:
    """``/ok/``, ``/404/``, ``/trunc/``, ``/garbage/``, ``/wrong/`` (alpha 0.5 file), ``/nolength/``."""

    def __init__(self):
        self.good, self.wrong = weights_bytes(0.35), weights_bytes(0.5)
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                kind = self.path.split("/")[1]
                if kind == "404":
                    self.send_error(404, "Not Found")
                    return
                body = {"garbage": b"<html>not the file you want</html>" * 100, "wrong": server.wrong}.get(
                    kind, server.good)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if kind != "nolength":
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body[: len(body) // 3] if kind == "trunc" else body)
                self.wfile.flush()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def env(tmp_path, monkeypatch, server):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("MNV2REF_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MNV2REF_OFFLINE", raising=False)
    monkeypatch.setenv("MNV2REF_WEIGHTS_URL", server.url + "/ok/")
    server.requests.clear()
    return tmp_path


def leftovers(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_success_then_cache_hit_without_a_request(env, server):
    m = mnv2ref.MobileNetV2(**KW)
    assert server.requests == ["/ok/" + NAME]
    assert leftovers(env / "cache") == [NAME]  # the file, and no temporary file
    assert m.weights_source == str(env / "cache" / NAME)
    again = mnv2ref.MobileNetV2(**KW)
    assert server.requests == ["/ok/" + NAME]  # no second request
    ref = mnv2ref.MobileNetV2(weights=None, alpha=0.35, include_top=False, input_shape=(96, 96, 3), seed=7)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    np.testing.assert_array_equal(again.predict(x), ref.predict(x))


def test_keras_cache_comes_first(env, server):
    (env / "keras" / "models").mkdir(parents=True)
    (env / "keras" / "models" / NAME).write_bytes(server.good)
    m = mnv2ref.MobileNetV2(**KW)
    assert server.requests == [] and m.weights_source == str(env / "keras" / "models" / NAME)


def test_mnv2ref_cache_is_used_without_a_request(env, server):
    (env / "cache").mkdir()
    (env / "cache" / NAME).write_bytes(server.good)
    mnv2ref.MobileNetV2(**KW)
    assert server.requests == []


def _fails(env, match):
    with pytest.raises(FileNotFoundError) as e:
        mnv2ref.MobileNetV2(**KW)
    msg = str(e.value)
    assert NAME in msg and str(env / "cache") in msg and str(env / "keras" / "models") in msg, msg
    assert "MNV2REF_WEIGHTS_URL" in msg and "weights='/path/to/" in msg
    assert match in msg, msg
    assert leftovers(env / "cache") == []  # nothing partial left behind
    return msg


def test_404(env, server, monkeypatch):
    monkeypatch.setenv("MNV2REF_WEIGHTS_URL", server.url + "/404/")
    msg = _fails(env, "HTTP 404")
    assert f"{server.url}/404/{NAME}" in msg


def test_connection_refused(env, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MNV2REF_WEIGHTS_URL", f"http://127.0.0.1:{port}/w")  # no trailing slash: added
    msg = _fails(env, "no connection")
    assert f"http://127.0.0.1:{port}/w/{NAME}" in msg


def test_truncated_body(env, server, monkeypatch):
    monkeypatch.setenv("MNV2REF_WEIGHTS_URL", server.url + "/trunc/")
    _fails(env, f"truncated, received {len(server.good) // 3} of the {len(server.good)} bytes")


def test_body_that_is_not_hdf5(env, server, monkeypatch):
    monkeypatch.setenv("MNV2REF_WEIGHTS_URL", server.url + "/garbage/")
    msg = _fails(env, "the downloaded file is not valid")
    assert "HDF5" in msg


def test_hdf5_of_another_model_is_refused(env, server, monkeypatch):
    monkeypatch.setenv("MNV2REF_WEIGHTS_URL", server.url + "/wrong/")
    _fails(env, "not valid")


def test_no_content_length_is_validated_instead(env, server, monkeypatch):
    monkeypatch.setenv("MNV2REF_WEIGHTS_URL", server.url + "/nolength/")
    mnv2ref.MobileNetV2(**KW)
    assert leftovers(env / "cache") == [NAME]


def test_unwritable_cache_folder(env, server, monkeypatch):
    (env / "afile").write_text("not a folder")
    monkeypatch.setenv("MNV2REF_HOME", str(env / "afile" / "cache"))
    with pytest.raises(FileNotFoundError, match=r"cannot write in .*afile/cache"):
        mnv2ref.MobileNetV2(**KW)


def test_offline_names_the_file_the_url_and_the_folder(env, server, monkeypatch):
    monkeypatch.setenv("MNV2REF_OFFLINE", "1")
    msg = _fails(env, "downloads are turned off")
    assert f"{server.url}/ok/{NAME}" in msg and server.requests == []


def test_default_url_is_keras_base_weight_path(env, monkeypatch):
    monkeypatch.delenv("MNV2REF_WEIGHTS_URL")
    monkeypatch.setenv("MNV2REF_OFFLINE", "1")
    msg = _fails(env, "turned off")
    assert "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + NAME in msg


def test_base_url_argument_wins_over_the_environment(env, server, monkeypatch):
    monkeypatch.setenv("MNV2REF_WEIGHTS_URL", server.url + "/404/")
    path = mnv2ref.model.resolve_imagenet(0.35, 96, False, base_url=server.url + "/ok/")
    assert server.requests == ["/ok/" + NAME] and os.path.basename(path) == NAME


def test_non_standard_size_falls_back_to_224_with_keras_warning(env, server):
    with pytest.warns(UserWarning, match=r"Weights for input shape \(224, 224\) will be loaded"):
        mnv2ref.MobileNetV2(weights="imagenet", alpha=0.35, include_top=False, input_shape=(200, 300, 3))
    assert server.requests == ["/ok/" + NAME_224]


def test_progress_bar_on_request_quiet_by_default(env, server, capsys):
    download.fetch(f"{server.url}/ok/{NAME}", str(env / "a.h5"), progress=True)
    err = capsys.readouterr().err
    assert "100%" in err and "a.h5" in err and err.endswith("\n")
    download.fetch(f"{server.url}/ok/{NAME}", str(env / "b.h5"))  # stderr is not a terminal here
    assert capsys.readouterr().err == ""
    assert (env / "a.h5").read_bytes() == server.good


def test_fetch_errors_are_oserrors_naming_url_and_destination(env, server):
    with pytest.raises(download.DownloadError) as e:
        download.fetch(f"{server.url}/404/x.h5", str(env / "x.h5"))
    assert isinstance(e.value, OSError) and f"{server.url}/404/x.h5" in str(e.value) and "x.h5" in str(e.value)
