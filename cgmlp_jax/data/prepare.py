"""Downloading and preparing a TFDS dataset that is not prepared, or a one-line error saying why not.

The machines this runs on are often offline, so a download that cannot work fails within seconds
(a probe of the dataset's download hosts) rather than after TFDS's minutes of retries; a dataset
that needs a manual download names TFDS's instructions and the manual_dir. In a multi-process run
process 0 prepares while the others wait.
"""
from __future__ import annotations

import urllib.parse

import jax
import requests
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from cgmlp_jax.errors import DataError

# Seconds to wait for a dataset's download host before calling this machine offline. TFDS sets no
# timeout and retries a failed download 10 times with exponential backoff: about 200 s offline.
_PROBE_TIMEOUT_S = 5.0


def prepare_hint(name: str, data_dir: str) -> str:
  return (f"Prepare it on a machine with internet access with `tfds build {name} --data_dir "
          f"{data_dir}` and copy that directory here, or point --config.data_dir (or the "
          "TFDS_DATA_DIR environment variable, read when tensorflow_datasets is imported) at a "
          "directory that already holds the prepared dataset.")


def _manual_dir(builder: tfds.core.DatasetBuilder):
  return builder.data_dir_root / "downloads" / "manual"  # TFDS's default


def _check_can_download(builder: tfds.core.DatasetBuilder) -> None:
  """Fails in seconds, with the fix, where TFDS would fail after minutes or with a traceback.

  A dataset with manual download instructions needs its files in the manual_dir; any other must
  reach the hosts of the URLs in its checksums file (through the same proxies as TFDS's requests).
  """
  name, root, manual_dir = builder.name, str(builder.data_dir_root), _manual_dir(builder)
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    if not (manual_dir.is_dir() and any(manual_dir.iterdir())):
      instructions = " ".join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())
      raise DataError(
          f"Dataset {name!r} is not prepared in data_dir {root!r} and cannot be downloaded "
          f"automatically: follow TFDS's manual download instructions ({instructions}), putting "
          f"the files in manual_dir {str(manual_dir)!r}, then rerun. " + prepare_hint(name, root))
    return
  urls = [url for url in builder.url_infos or {}  # no checksums file: nothing known to probe
          if urllib.parse.urlsplit(url).scheme in ("http", "https")]
  for host, url in {urllib.parse.urlsplit(url).netloc: url for url in urls}.items():
    try:
      requests.head(url, timeout=_PROBE_TIMEOUT_S)  # any answer will do, even an error status
    except requests.RequestException as e:
      cause = getattr(e.args[0], "reason", e) if e.args else e  # e.g. NameResolutionError
      raise DataError(
          f"Dataset {name!r} is not prepared in data_dir {root!r} and cannot be downloaded: "
          f"{host} is unreachable ({type(cause).__name__}; is this machine offline?). " +
          prepare_hint(name, root)) from None


def _download_and_prepare(builder: tfds.core.DatasetBuilder) -> None:
  """``builder.download_and_prepare()``; no network, no manual files or no disk space is reported
  as one DataError line.

  The checks run where TFDS announces the download (``_log_download_bytes``, just before it
  makes its download manager), i.e. only when it really prepares the dataset: not when another
  process has just prepared it, nor under ``tfds.testing.mock_data`` (which makes
  download_and_prepare a no-op, so tests never touch the network). Offline, its announcement is
  never printed and the error is the only line.
  """
  name, root = builder.name, str(builder.data_dir_root)
  announce = builder._log_download_bytes  # pylint: disable=protected-access

  def checked_announce(*args, **kwargs):
    _check_can_download(builder)
    return announce(*args, **kwargs)

  builder._log_download_bytes = checked_announce
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=_manual_dir(builder)))
  except (OSError, AssertionError, tfds.download.DownloadError) as e:
    # A download that failed midway, files missing from the manual_dir, no disk space, ...
    reason = (str(e).strip().splitlines() or [""])[0]
    raise DataError(f"Could not download and prepare dataset {name!r} in data_dir {root!r} "
                    f"({type(e).__name__}: {reason}). " + prepare_hint(name, root)) from e


def prepare(builder: tfds.core.DatasetBuilder) -> None:
  """Downloads and prepares the dataset unless it is prepared: process 0 does it while the other
  processes of a multi-process run wait at a barrier, so that they never write the same files.

  Every process passes the barrier, prepared or not: whether the dataset is prepared changes while
  process 0 works, so only an unconditional barrier is met by all. Process 0 raises its failure
  after the barrier, so the others never wait for it forever (they then find no dataset and say
  so). The data_dir must be one that all processes see (shared disk or bucket).
  """
  error = None
  # data_path first: TFDS's is_prepared() logs a warning about a folder that does not exist.
  if jax.process_index() == 0 and not (builder.data_path.exists() and builder.is_prepared()):
    try:
      _download_and_prepare(builder)
    except Exception as e:  # pylint: disable=broad-except  (raised below)
      error = e
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"cgmlp_jax prepare {builder.name} {builder.data_dir}")
  if error is not None:
    raise error
