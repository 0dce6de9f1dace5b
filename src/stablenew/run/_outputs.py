"""Writing a job's images and manifest: exact bytes, safe paths, atomic writes.

Layout: ``<output root>/<job_id>/<NN>-<stage>-<MM>.<ext>`` and ``<job_id>/manifest.json``.

- Images are written exactly as the WebUI sent them (base64-decoded, never re-encoded), so the
  A1111 ``parameters`` text chunk in each PNG survives and bytes on disk equal bytes received.
- Every write goes to a temporary file in the same folder and is renamed into place, so a reader
  (or a resumed job) never sees half a file. A finished stage's files are its checkpoint; resume
  re-checks their sha256, so a file damaged by a crash is detected and the stage re-runs.
- Paths are built only from a validated job id and our own stage names: nothing from a config or
  a job can point outside the output root, and a job folder that is a symlink is refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import secrets
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from stablenew.webui import ImageBytes, decode, image_format, image_size

from ._job_id import is_valid_job_id

_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp", "bin": "bin"}
# The name of every image write_stage makes; nothing else is ever read as another job's output.
_OUTPUT_NAME = re.compile(r"\d{2}-[a-z0-9]+-\d{2}\.(?:png|jpg|webp|bin)")


@dataclass(frozen=True)
class OutputFile:
    """One image on disk. ``path`` is relative to the output root."""

    path: str
    sha256: str
    width: int | None
    height: int | None
    seed: int | None
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Of an image read only for its header (size and format): a PNG or WebP states both in its first
# 30 bytes, a JPEG in a start-of-frame segment that follows its EXIF and ICC segments.
_HEAD_BYTES = 3 * (1 << 16)
_SLICE_BYTES = 1 << 20


@dataclass(frozen=True)
class StoredImage:
    """An image file of a job's folder, known by its sha256, whose base64 is read only when needed.

    A reused stage hands these on instead of its images' base64: a stage after it that is reused too
    needs only their sha256 and size, and only the stage the WebUI runs reads the bytes it sends
    (:meth:`read`, which checks the sha256 again on the very bytes it hands over).
    """

    path: Path
    sha256: str

    def head(self) -> str:
        """The base64 of the file's first bytes: enough to tell its size and format."""
        with _open_no_follow(self.path) as handle:
            return base64.b64encode(handle.read(_HEAD_BYTES)).decode("ascii")

    def read(self) -> ImageBytes:
        """The file's bytes, checked against its sha256 (a request sends them as base64, encoded a
        slice at a time as it goes out).

        Raises:
            OSError: the file cannot be read (gone, or a symlink).
            ValueError: its bytes no longer have the sha256 it was taken with.
        """
        with _open_no_follow(self.path) as handle:
            data = handle.read()
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise ValueError(f"{self.path.name} of job {self.path.parent.name} changed since it was checked")
        return ImageBytes(data)


class JobOutputs:
    """The folder of one job under the output root."""

    def __init__(self, root: str | Path, job_id: str) -> None:
        if not is_valid_job_id(job_id):
            raise ValueError(f"job id {job_id!r} is not a safe folder name ([A-Za-z0-9_-]+)")
        self.root = Path(root).resolve()
        self.job_id = job_id
        self.folder = self.root / job_id

    def _make_folder(self) -> None:
        """Create the job folder, refusing one that is a symlink (it could lead out of the output root).

        On shared storage anyone who can write the root could pre-create ``<root>/<a future job id>`` as a
        link to another folder; the worker would then write wherever it points.
        """
        if not self.folder.is_symlink():
            self.folder.mkdir(parents=True, exist_ok=True)
        if self.folder.is_symlink() or self.folder.resolve() != self.root / self.job_id:
            raise ValueError(
                f"output folder {self.folder} is a symlink or leads outside the output root; not writing there"
            )

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    def remove_partial_files(self) -> list[str]:
        """Delete the temporary files (``.<name>.<random>.tmp``) a process killed mid-write left here.

        Call it when a run of the job starts: only one run of a job writes at a time, so such a file
        can only come from a run that died. Returns the names removed."""
        if not self.folder.is_dir() or self.folder.is_symlink():
            return []
        removed = []
        for leftover in self.folder.glob(".*.tmp"):
            if leftover.is_file() and not leftover.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
                    removed.append(leftover.name)
        return removed

    def write_stage(
        self,
        index: int,
        stage: str,
        images: Sequence[str],
        seeds: Sequence[int | None] = (),
        *,
        decoded: Sequence[bytes] | None = None,
    ) -> list[OutputFile]:
        """Write one stage's base64 images; return what was written, with sha256 and size.

        ``decoded`` is their bytes when the caller has them already (decoded from ``images`` as they
        were checked), written as they are instead of being decoded again."""
        if not stage.isidentifier():
            raise ValueError(f"stage name {stage!r} is not a safe file name part")
        self._make_folder()
        if decoded is not None and len(decoded) != len(images):
            decoded = None
        written = []
        for number, b64 in enumerate(images):
            try:
                data = decode(b64) if decoded is None else decoded[number]
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"stage {stage} image {number} is not valid base64: {exc}") from None
            ext = _EXTENSIONS[image_format(b64)]
            name = f"{index:02d}-{stage}-{number:02d}.{ext}"
            # The hash runs beside the write (both release the GIL): together they cost about one.
            digest = _sha256_async(data)
            atomic_write(self.folder / name, data)
            width: int | None
            height: int | None
            try:
                width, height = image_size(b64)
            except ValueError:
                width = height = None
            seed = seeds[number] if number < len(seeds) else None
            written.append(
                OutputFile(
                    path=f"{self.job_id}/{name}",
                    sha256=digest.result(),
                    width=width,
                    height=height,
                    seed=seed,
                    bytes=len(data),
                )
            )
        return written

    def read_verified(self, files: Sequence[OutputFile]) -> list[str] | None:
        """The base64 of ``files`` if every one exists with its recorded sha256, else None."""
        images = []
        for item in files:
            path = self._own_file(item)
            if path is None:
                return None
            try:
                images.append(StoredImage(path, item.sha256).read().base64())
            except (OSError, ValueError):
                return None
        return images

    def verify(self, files: Sequence[OutputFile]) -> bool:
        """Whether every one of ``files`` is in this job's folder with its recorded sha256. Each file is
        hashed as it is read, a slice at a time: nothing is kept or encoded."""
        for item in files:
            path = self._own_file(item)
            if path is None:
                return False
            try:
                digest, _ = _file_sha256(path)
            except OSError:
                return False
            if digest != item.sha256:
                return False
        return True

    def stored_images(self, files: Sequence[OutputFile]) -> list[StoredImage]:
        """``files`` of this job (e.g. just taken by :meth:`take_stage`) as images read only when needed."""
        return [StoredImage(self.root / item.path, item.sha256) for item in files]

    def _own_file(self, item: OutputFile) -> Path | None:
        path = self.root / item.path
        if path.parent != self.folder or path.is_symlink():
            return None  # a link could hand the next stage (and the WebUI) a file from elsewhere
        return path

    def source_path(self, item: OutputFile) -> Path | None:
        """Where a file recorded for another job of this output root is, if ``item.path`` is one we
        could have written: ``<job id>/<NN>-<stage>-<MM>.<ext>``, inside the root, no symlink on the way.

        Only paths our own index recorded come here, and each is re-checked: a record that names
        anything else (``..``, an absolute path, a link) is treated as missing.
        """
        parts = PurePosixPath(item.path).parts
        if len(parts) != 2 or not is_valid_job_id(parts[0]) or not _OUTPUT_NAME.fullmatch(parts[1]):
            return None
        folder = self.root / parts[0]
        path = folder / parts[1]
        if folder.is_symlink() or path.is_symlink() or folder.resolve() != folder:
            return None
        return path

    def take_stage(self, index: int, stage: str, files: Sequence[OutputFile]) -> list[OutputFile]:
        """Give this job stage ``index``'s files from another job's ``files``: a hard link when the
        output root allows it, else a copy. Each file must have its recorded sha256, hashed as it is
        linked or copied (read once, a slice at a time; never held whole or encoded). Returns the new
        files; their base64 is read only when a stage needs it (:meth:`stored_images`).

        Raises:
            ValueError / OSError: a file is missing, not one of ours or changed (then nothing is kept
                and the stage must run).
        """
        if not stage.isidentifier():
            raise ValueError(f"stage name {stage!r} is not a safe file name part")
        self._make_folder()
        taken: list[OutputFile] = []
        try:
            for number, item in enumerate(files):
                source = self.source_path(item)
                if source is None:
                    raise ValueError(f"{item.path} is not a file of this output root")
                name = f"{index:02d}-{stage}-{number:02d}{source.suffix}"
                size = _link_verified(source, self.folder / name, item.sha256)
                taken.append(
                    OutputFile(
                        path=f"{self.job_id}/{name}",
                        sha256=item.sha256,
                        width=item.width,
                        height=item.height,
                        seed=item.seed,
                        bytes=size,
                    )
                )
        except BaseException:
            for done in taken:
                with contextlib.suppress(OSError):
                    (self.root / done.path).unlink()
            raise
        return taken

    def write_manifest(self, manifest: dict[str, Any]) -> Path:
        self._make_folder()
        atomic_write(
            self.manifest_path, json.dumps(manifest, indent=2, sort_keys=False).encode("utf-8"), durable=True
        )
        return self.manifest_path


def _open_no_follow(path: Path) -> Any:
    """``path`` opened for reading, unbuffered; a symlink there is refused (OSError), never followed."""
    return open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb", buffering=0)


def _file_sha256(path: Path) -> tuple[str, int]:
    """(sha256, size) of the file at ``path``, read a slice at a time (never held whole)."""
    with _open_no_follow(path) as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return digest, os.fstat(handle.fileno()).st_size


def _copy_hashing(source: Path, target: Path) -> str:
    """Copy ``source`` to the new file ``target`` a slice at a time; return the sha256 of what was copied."""
    digest = hashlib.sha256()
    buffer = bytearray(_SLICE_BYTES)
    view = memoryview(buffer)
    with _open_no_follow(source) as reader, open(target, "xb") as writer:
        while size := reader.readinto(buffer):
            digest.update(view[:size])
            writer.write(view[:size])
    return digest.hexdigest()


def _link_verified(source: Path, target: Path, sha256: str) -> int:
    """Link (else copy) ``source`` to ``target`` atomically if its bytes hash to ``sha256``; return its
    size. The hash is taken of what ``target`` holds: the linked file, or the bytes as they were copied.

    Raises:
        ValueError: the bytes do not hash to ``sha256``. OSError: ``source`` cannot be read.
    """
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        try:
            os.link(source, tmp, follow_symlinks=False)
        except OSError:  # another file system, or no links there: copy, hashing as it goes
            digest, size = _copy_hashing(source, tmp), tmp.stat().st_size
        else:
            digest, size = _file_sha256(tmp)
        if digest != sha256:
            raise ValueError(f"{source.name} of {source.parent.name} changed since it was recorded")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return size


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600 whatever the umask; outputs are meant to be read by others (a GUI,
# a web server, another uid on shared storage), so they get the mode a plain open() would give.
_FILE_MODE = 0o666 & ~_current_umask()


_HASHER: ThreadPoolExecutor | None = None
_HASH_INLINE_BYTES = 1 << 20


def _sha256_async(data: bytes) -> Future[str]:
    """sha256 of ``data``, computed on a helper thread when ``data`` is large enough to be worth it."""
    global _HASHER
    if len(data) < _HASH_INLINE_BYTES:
        done: Future[str] = Future()
        done.set_result(hashlib.sha256(data).hexdigest())
        return done
    if _HASHER is None:
        _HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stablenew-sha256")
    return _HASHER.submit(lambda: hashlib.sha256(data).hexdigest())


def atomic_write(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    ``durable`` also fsyncs the file before the rename (used for the manifest). Images skip it:
    a resumed job re-checks every image's sha256, so a file torn by a power loss is detected and
    its stage re-run, and an fsync per multi-megabyte image would cost more than it protects.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), _FILE_MODE)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
