"""``weights="imagenet"``: find the official file where Keras keeps it, else download it safely.

The file name is Keras's, exactly (``model.weights_filename``:
``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}[_no_top].h5``; ``float``
so that ``alpha=1`` asks for ``1.0``, cf. tensorflow/tensorflow#49904). Looked up, first hit wins:

1. Keras's cache, ``$KERAS_HOME/models`` (default ``~/.keras/models``), so a Keras user's
   existing downloads are reused (source: ``keras.utils.get_file(cache_subdir="models")``);
2. mnv2ref's cache, ``$MNV2REF_HOME`` (default ``$XDG_CACHE_HOME/mnv2ref``, i.e. ``~/.cache/mnv2ref``);
3. a download of ``<base URL><file name>`` into (2). The base URL is the ``base_url`` argument, else
   ``$MNV2REF_WEIGHTS_URL``, else Keras's ``BASE_WEIGHT_PATH``. ``MNV2REF_OFFLINE=1`` turns this
   step off (then a missing file is an error straight away).

The download (``urllib`` only) goes to a temporary file in the destination folder and is renamed
into place (``os.replace``, atomic on one file system) only when it is complete -- as many bytes as
``Content-Length`` said -- and valid: it opens with mnv2ref's reader and has the layers and shapes of
the requested model. Otherwise the temporary file is deleted: a partial or foreign file is never
left where the next call would find it. Keras publishes no checksum for these files, so none is
checked (Keras checks none either). A progress bar is drawn on stderr when stderr is a terminal.

Every failure is a ``DownloadError`` (an ``OSError``) naming the URL and the destination; the
``MobileNetV2`` entry point turns it into one ``FileNotFoundError`` that also says which folders were
searched and where to put the file by hand.
"""
from __future__ import annotations

import http.client
import os
import tempfile
import urllib.error
import urllib.request

from .model import BASE_WEIGHT_PATH, keras_cache_dir, weights_filename
from .progress import Progress

ENV_URL = "MNV2REF_WEIGHTS_URL"
ENV_HOME = "MNV2REF_HOME"
ENV_OFFLINE = "MNV2REF_OFFLINE"
CHUNK = 1 << 16


class DownloadError(OSError):
    """A download that failed or was refused; the message names the URL and the destination file."""


def cache_dir() -> str:
    """mnv2ref's own cache folder: ``$MNV2REF_HOME``, else ``$XDG_CACHE_HOME/mnv2ref`` or ``~/.cache/mnv2ref``."""
    if os.environ.get(ENV_HOME):
        return os.environ[ENV_HOME]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mnv2ref")


def search_dirs() -> list[str]:
    """The folders searched for an official file, in order."""
    return [keras_cache_dir(), cache_dir()]


def base_url(override: str | None = None) -> str:
    url = override or os.environ.get(ENV_URL) or BASE_WEIGHT_PATH
    return url if url.endswith("/") else url + "/"


def fetch(url: str, dest: str, *, validate=None, progress: bool | None = None, timeout: float = 60.0) -> str:
    """Download ``url`` to ``dest`` atomically; ``validate(tmp_path)`` may raise ValueError/OSError to refuse it.

    ``progress``: True/False, or None for "when stderr is a terminal". Returns ``dest``.
    Raises ``DownloadError`` (HTTP error, no connection, truncated body, invalid content).
    """
    dest = os.path.abspath(dest)
    folder, name = os.path.split(dest)
    where = f"downloading {url} to {dest!r}"
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "mnv2ref"})
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{where}: the server answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        raise DownloadError(f"{where}: no connection ({getattr(e, 'reason', None) or e})") from None
    tmp = None
    try:
        with resp:
            try:
                os.makedirs(folder, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
            except OSError as e:
                raise DownloadError(f"{where}: cannot write in {folder!r} ({e})") from None
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = Progress(total, unit="MB", scale=1e6, label=name, enabled=progress)
            done = 0
            with os.fdopen(fd, "wb") as out:
                while True:
                    try:
                        data = resp.read(CHUNK)
                    except (http.client.HTTPException, OSError) as e:
                        raise DownloadError(f"{where}: the connection broke after {done} bytes ({e!r})") from None
                    if not data:
                        break
                    try:
                        out.write(data)
                    except OSError as e:  # disk full, quota, ...
                        raise DownloadError(f"{where}: writing to {folder!r} failed ({e})") from None
                    done += len(data)
                    bar.update(len(data))
                out.flush()
                os.fsync(out.fileno())
            bar.close()
        if total is not None and done != total:
            raise DownloadError(f"{where}: truncated, received {done} of the {total} bytes announced")
        if validate is not None:
            try:
                validate(tmp)
            except (ValueError, OSError) as e:
                msg = str(e).replace(repr(tmp), "the downloaded file").replace(tmp, "the downloaded file")
                raise DownloadError(f"{where}: the downloaded file is not valid: {msg}") from None
        try:
            os.replace(tmp, dest)
        except OSError as e:
            raise DownloadError(f"{where}: cannot move the download into place ({e})") from None
        tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def imagenet_weights(alpha: float, rows: int, include_top: bool, *, base_url_override: str | None = None,
                     progress: bool | None = None) -> str:
    """Path of the official ImageNet weights for (alpha, rows, include_top): cached, else downloaded.

    Raises FileNotFoundError (one message: the file name, the folders searched, the URL tried and why
    it failed, where to put the file by hand).
    """
    name = weights_filename(alpha, rows, include_top)
    for folder in search_dirs():
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    url = base_url(base_url_override) + name
    dest = os.path.join(cache_dir(), name)

    def validate(tmp):
        from . import formats

        formats.load_raw(tmp, alpha, include_top, 1000)

    try:
        if os.environ.get(ENV_OFFLINE, "") not in ("", "0"):
            raise DownloadError(f"downloads are turned off ({ENV_OFFLINE}={os.environ[ENV_OFFLINE]})")
        return fetch(url, dest, validate=validate, progress=progress)
    except DownloadError as e:
        raise FileNotFoundError(
            f"ImageNet weights {name!r} are not in {keras_cache_dir()!r} (Keras's cache) or {cache_dir()!r} "
            f"(mnv2ref's cache), and they could not be downloaded from {url}: {e}. On a machine with internet "
            f"access download that URL and put the file in {cache_dir()!r} (or {keras_cache_dir()!r}); or set "
            f"{ENV_URL} to a mirror; or pass weights='/path/to/{name}'."
        ) from None
