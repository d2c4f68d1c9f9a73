"""Where backups are kept: a directory (local or mounted) or S3-compatible object storage.

Owns the ``Destination`` protocol and its two implementations, ``DirDestination`` and
``S3Destination`` (boto3, imported only when an ``s3://`` destination is opened), and
``open_destination(url)``.

Contracts, for both:

- a new backup is written by the agent to ``staging(name)``, a local path, verified there, and
  becomes visible under ``name`` only through ``publish``: the directory destination fsyncs
  the file, renames ``DIR/<name>.part`` to ``DIR/<name>`` and fsyncs the directory; S3
  uploads the object (a PUT or a multipart upload is atomic: the key appears complete or not
  at all), downloads it again and compares its SHA-256 with the staged file's.  Anything else
  left under the destination (``*.part``, temporary manifests) is incomplete and removed by
  ``cleanup_incomplete`` when the agent starts;
- the manifest is replaced atomically (directory: temp file, fsync, rename, fsync dir; S3:
  one PUT of the whole object);
- ``local_copy`` gives a local path with the stored bytes (in place for a directory,
  downloaded into the given work directory for S3);
- a file that failed verification is published under ``failed/<name>``, apart;
- private, as etcd keeps a member's files (``raftkv.fileutil``): ``staging(name)`` creates the
  staged file, empty and 0600, so what the agent writes into it (truncating, not replacing)
  is never readable by others, and the published file keeps that mode; the directories a
  destination creates (its root, ``failed/``, S3's local work directory) are 0700.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
from typing import Any, Protocol

from raftkv.backup.manifest import (
    MANIFEST_NAME,
    Manifest,
    decode_manifest,
    encode_manifest,
    read_manifest_file,
    write_file_atomic,
)
from raftkv.backup.snapshot_file import sha256_file
from raftkv.fileutil import PRIVATE_FILE_MODE, mkdir_all
from raftkv.wal.files import fsync_dir

PART_SUFFIX = ".part"


class DestinationError(Exception):
    """The destination cannot be used or a stored file is missing; the message says which."""


class Destination(Protocol):
    def describe(self) -> str: ...

    def cleanup_incomplete(self) -> list[str]: ...

    def staging(self, name: str) -> str: ...

    def publish(self, name: str, staged: str, sha256: str) -> None: ...

    def discard(self, staged: str) -> None: ...

    def local_copy(self, name: str, workdir: str) -> str: ...

    def exists(self, name: str) -> bool: ...

    def delete(self, name: str) -> None: ...

    def names(self) -> list[str]: ...

    def read_manifest(self) -> Manifest: ...

    def write_manifest(self, manifest: Manifest) -> None: ...

    def close(self) -> None: ...


def open_destination(
    url: str, *, s3_endpoint_url: str = "", work_dir: str = "", create: bool = True
) -> Destination:
    """A destination from ``DIR`` or ``s3://bucket/prefix``."""
    if url.startswith("s3://"):
        return S3Destination(url, endpoint_url=s3_endpoint_url, work_dir=work_dir)
    return DirDestination(url, create=create)


class DirDestination:
    def __init__(self, root: str, create: bool = True) -> None:
        self.root = os.path.abspath(root)
        if create:
            mkdir_all(self.root)
        elif not os.path.isdir(self.root):
            raise DestinationError(f"{self.root}: no such backup directory")

    def describe(self) -> str:
        return self.root

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def cleanup_incomplete(self) -> list[str]:
        removed = []
        for entry in sorted(os.listdir(self.root)):
            if entry.endswith(PART_SUFFIX) or entry.startswith(f".{MANIFEST_NAME}.tmp-"):
                full = self.path(entry)
                if os.path.isdir(full):
                    shutil.rmtree(full, ignore_errors=True)
                else:
                    os.unlink(full)
                removed.append(entry)
        if removed:
            fsync_dir(self.root)
        return removed

    def staging(self, name: str) -> str:
        return _new_private_file(self.path(name + PART_SUFFIX))

    def publish(self, name: str, staged: str, sha256: str) -> None:
        fd = os.open(staged, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        target = self.path(name)
        mkdir_all(os.path.dirname(target))
        os.replace(staged, target)
        fsync_dir(os.path.dirname(target))

    def discard(self, staged: str) -> None:
        if os.path.exists(staged):
            os.unlink(staged)

    def local_copy(self, name: str, workdir: str) -> str:
        path = self.path(name)
        if not os.path.isfile(path):
            raise DestinationError(f"{path}: no such file")
        return path

    def exists(self, name: str) -> bool:
        return os.path.isfile(self.path(name))

    def delete(self, name: str) -> None:
        if os.path.exists(self.path(name)):
            os.unlink(self.path(name))
            fsync_dir(os.path.dirname(self.path(name)))

    def names(self) -> list[str]:
        """Stored file names (``failed/`` included), relative to the root."""
        out = []
        for dirpath, _dirs, files in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            out += [f if rel == "." else f"{rel}/{f}" for f in files]
        return sorted(out)

    def close(self) -> None:
        pass

    def read_manifest(self) -> Manifest:
        return read_manifest_file(self.path(MANIFEST_NAME))

    def write_manifest(self, manifest: Manifest) -> None:
        write_file_atomic(self.path(MANIFEST_NAME), encode_manifest(manifest))


class S3Destination:
    """``s3://bucket/prefix`` through boto3 (credentials and region from the usual AWS
    variables and files; ``endpoint_url`` for S3-compatible servers)."""

    def __init__(self, url: str, *, endpoint_url: str = "", work_dir: str = "") -> None:
        rest = url[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise DestinationError(f"{url}: no bucket name")
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        try:
            boto3: Any = importlib.import_module("boto3")
            self._botocore: Any = importlib.import_module("botocore.exceptions")
        except ImportError:
            raise DestinationError(
                "an s3:// destination needs boto3: pip install 'raftkv[s3]'"
            ) from None
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        self.client: Any = boto3.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or "us-east-1"
        )
        if work_dir:
            mkdir_all(work_dir)
        self.staging_dir = tempfile.mkdtemp(prefix="raftkv-backup-", dir=work_dir or None)

    def describe(self) -> str:
        return self.url

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _call(self, what: str, func: Any, **kwargs: Any) -> Any:
        try:
            return func(**kwargs)
        except (self._botocore.BotoCoreError, self._botocore.ClientError) as exc:
            raise DestinationError(f"{self.url}: {what}: {exc}") from None

    def cleanup_incomplete(self) -> list[str]:
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        mkdir_all(self.staging_dir)
        aborted = []
        listing = self._call(
            "list uploads",
            self.client.list_multipart_uploads,
            Bucket=self.bucket,
            Prefix=self.key(""),
        )
        for upload in listing.get("Uploads") or []:
            self._call(
                "abort upload",
                self.client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=upload["Key"],
                UploadId=upload["UploadId"],
            )
            aborted.append(str(upload["Key"]))
        return aborted

    def staging(self, name: str) -> str:
        return _new_private_file(os.path.join(self.staging_dir, name + PART_SUFFIX))

    def publish(self, name: str, staged: str, sha256: str) -> None:
        self._call(
            "upload",
            self.client.upload_file,
            Filename=staged,
            Bucket=self.bucket,
            Key=self.key(name),
        )
        os.unlink(staged)
        back = self.local_copy(name, self.staging_dir)
        try:
            got = sha256_file(back)
        finally:
            os.unlink(back)
        if got != sha256:
            raise DestinationError(f"{self.url}: {name}: the stored object differs from the upload")

    def discard(self, staged: str) -> None:
        if os.path.exists(staged):
            os.unlink(staged)

    def local_copy(self, name: str, workdir: str) -> str:
        path = os.path.join(workdir, os.path.basename(name))
        try:
            self.client.download_file(Bucket=self.bucket, Key=self.key(name), Filename=path)
        except (self._botocore.BotoCoreError, self._botocore.ClientError) as exc:
            raise DestinationError(f"{self.url}: {name}: download failed: {exc}") from None
        return path

    def exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except self._botocore.ClientError:
            return False
        return True

    def delete(self, name: str) -> None:
        self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=self.key(name))

    def names(self) -> list[str]:
        out = []
        token: dict[str, str] = {}
        while True:
            page = self._call(
                "list",
                self.client.list_objects_v2,
                Bucket=self.bucket,
                Prefix=self.key(""),
                **token,
            )
            out += [str(o["Key"])[len(self.key("")) :] for o in page.get("Contents") or []]
            if not page.get("IsTruncated"):
                return sorted(out)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def close(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    def read_manifest(self) -> Manifest:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key(MANIFEST_NAME))
        except self._botocore.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return Manifest()
            raise DestinationError(f"{self.url}: read manifest: {exc}") from None
        except self._botocore.BotoCoreError as exc:
            raise DestinationError(f"{self.url}: read manifest: {exc}") from None
        return decode_manifest(obj["Body"].read(), f"{self.url}/{MANIFEST_NAME}")

    def write_manifest(self, manifest: Manifest) -> None:
        self._call(
            "write manifest",
            self.client.put_object,
            Bucket=self.bucket,
            Key=self.key(MANIFEST_NAME),
            Body=encode_manifest(manifest),
        )


def _new_private_file(path: str) -> str:
    """Create ``path`` empty and ``PRIVATE_FILE_MODE`` (a leftover is replaced); returns it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    return path
