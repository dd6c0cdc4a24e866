"""A tenant's folder: where the queue writes that tenant's files, and nowhere else.

A tenant names its output folder at ``submit --output DIR``. What a worker writes there (the
promoted ``model.onnx``, ``model-card.json``, ``MODEL_CARD.md``, the lock, ``trials/*.onnx``) has
fixed names but is written with the worker's rights, so the folder is checked twice:

* at submit, ``DIR`` is resolved (symbolic links followed, ``..`` removed) and must lie inside
  the **tenants' root** (``--root``, else ``EASEML_AUTOML_ROOT``, else the current directory),
  and must not be, hold or lie inside another tenant's folder; the resolved path is recorded;
* at every write, the recorded path is opened one component at a time from ``/`` without
  following a symbolic link (``O_NOFOLLOW``), and each file is created inside that open folder
  (``dir_fd``: a temporary name with ``O_EXCL | O_NOFOLLOW``, then a rename within the folder).
  A link planted after submit, anywhere on the path or in place of a file, is refused, not
  followed. A worker with ``EASEML_AUTOML_ROOT`` (or ``work --root``) set also refuses a
  recorded folder outside that root, whatever the store says (a tenant that can write the store
  could record any path).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import Iterator

from easeml_ci.atomic import atomic_write_in

from .errors import TenantError

ROOT_ENV = "EASEML_AUTOML_ROOT"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class FolderError(TenantError):
    """An output path outside the tenant's folder, or a symbolic link on the way to it (exit 2)."""


def tenants_root(root: str | os.PathLike | None = None) -> tuple[str, str]:
    """(the resolved tenants' root, where it came from) for ``root``, else the environment, else
    the current directory."""
    if root:
        return os.path.realpath(root), "--root"
    if os.environ.get(ROOT_ENV):
        return os.path.realpath(os.environ[ROOT_ENV]), ROOT_ENV
    return os.path.realpath(os.getcwd()), f"the current directory; set --root or {ROOT_ENV}"


def is_inside(path: str, folder: str) -> bool:
    """Whether the absolute ``path`` is ``folder`` or lies below it (both already resolved)."""
    return os.path.commonpath([path, folder]) == folder


def overlaps(a: str, b: str) -> bool:
    """Whether two resolved folders are the same, or one holds the other."""
    return is_inside(a, b) or is_inside(b, a)


def check_output(output: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """The resolved ``--output`` folder; :class:`FolderError` when it lies outside the root."""
    base, source = tenants_root(root)
    real = os.path.realpath(output)
    if not is_inside(real, base):
        shown = "" if real == os.path.abspath(output) else f" resolves to {real} (a symbolic link on the way) and"
        raise FolderError(f"--output {os.fspath(output)!r}{shown} lies outside the tenants' root {base} ({source}); "
                          "give a folder inside the root")
    return real


class TenantFolder:
    """An open tenant folder: files are written inside it and never through a symbolic link.

    ``path`` is the folder recorded at submit (absolute); missing components are created.
    ``root``: refuse a folder outside it (a worker's ``--root``). Raises :class:`FolderError`.
    """

    def __init__(self, path: str, *, root: str | None = None, _fd: int | None = None):
        self.path = path
        if _fd is not None:
            self.fd = _fd
            return
        if not os.path.isabs(path):
            raise FolderError(f"tenant folder {path!r} is not an absolute path; submit the tenant again "
                              "(`submit --replace`) to record its resolved folder")
        if root is not None:
            base = os.path.realpath(root)
            if not is_inside(os.path.normpath(path), base):
                raise FolderError(f"tenant folder {path} lies outside this worker's root {base} ({ROOT_ENV}); "
                                  "nothing written")
        self.fd = _open_path(os.path.normpath(path))

    def folder(self, name: str) -> "TenantFolder":
        """The sub-folder ``name`` (one component), created when missing."""
        return TenantFolder(os.path.join(self.path, name), _fd=_open_child(self.fd, name, self.path))

    def read(self, name: str) -> bytes | None:
        """The file ``name`` here, or None when it is missing (a link is refused, not read)."""
        _check_name(name)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _link_error(exc, os.path.join(self.path, name)) from None
        with os.fdopen(fd, "rb") as fh:
            return fh.read()

    def write(self, name: str, data: bytes, *, perms: int = 0o644) -> str:
        """Replace the file ``name`` here with ``data`` atomically and durably; returns its path.

        A link in its place is replaced by the file, never followed."""
        _check_name(name)
        path = os.path.join(self.path, name)
        with atomic_write_in(self.fd, name, "wb", perms=perms, shown=path) as fh:
            fh.write(data)
        return path

    @contextlib.contextmanager
    def locked(self, name: str = ".promote.lock") -> Iterator[None]:
        """Hold an exclusive lock on the file ``name`` here (created; a link is refused)."""
        _check_name(name)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644, dir_fd=self.fd)
        except OSError as exc:
            raise _link_error(exc, os.path.join(self.path, name)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "TenantFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise FolderError(f"{name!r} is not a file name inside the tenant's folder")


def _link_error(exc: OSError, where: str) -> Exception:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return FolderError(f"{where} is a symbolic link or not a folder; a tenant's files are written only "
                           "inside the folder recorded at submit, never through a link; nothing written")
    return exc


def _open_child(parent: int, name: str, parent_path: str) -> int:
    _check_name(name)
    where = os.path.join(parent_path, name)
    for _ in range(2):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):  # another worker made it first: open it
                os.mkdir(name, 0o755, dir_fd=parent)
        except OSError as exc:
            raise _link_error(exc, where) from None
    return os.open(name, _DIR_FLAGS, dir_fd=parent)


def _open_path(path: str) -> int:
    fd = os.open("/", _DIR_FLAGS)
    walked = "/"
    try:
        for part in [p for p in path.split("/") if p]:
            child = _open_child(fd, part, walked)
            os.close(fd)
            fd, walked = child, os.path.join(walked, part)
    except BaseException:
        os.close(fd)
        raise
    return fd
