"""Where a run keeps its files: a local folder or an object-store URL (s3://, gs://, ...), through
fsspec. Paths inside a store are relative keys ("parts/x.parquet"). A local folder keeps plain
file semantics (a write goes to a temporary name in the same folder, is flushed to disk, then
os.replace); an object store has no rename, but one PUT of a whole object is atomic, so a write
goes to a local temporary file and is uploaded once complete. A reader therefore never sees a
partial file or object.

Object-store clients come with extras (pip install 'pks[s3]', 'pks[http]'); endpoint and
credentials come from the client's own environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_PROFILE for s3) or from storage options (fsspec
keyword arguments, `--storage-options` JSON on the CLI), which apply to OUT's protocol and to
inputs of the same protocol.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pks.errors import UserError

EXTRAS = {
    "s3": "pks[s3]",
    "s3a": "pks[s3]",
    "http": "pks[http]",
    "https": "pks[http]",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
}


def is_url(spec: str | Path) -> bool:
    """An fsspec URL other than a plain local file (file:// is a local path)."""
    s = str(spec)
    return "://" in s and not s.startswith("file://")


def protocol(spec: str | Path) -> str:
    return str(spec).split("://", 1)[0] if is_url(spec) else "file"


def user_error(where: str, e: BaseException) -> UserError:
    """One line for what goes wrong reaching a store: a missing client, an unknown protocol, a
    missing bucket, refused credentials, an unreachable endpoint."""
    proto = protocol(where)
    if isinstance(e, ImportError):
        return UserError(
            f"{where}: {proto}:// needs a client that is not installed: pip install '{EXTRAS.get(proto, proto)}'"
        )
    if isinstance(e, ValueError) and "protocol" in str(e).lower():
        return UserError(f"{where}: unknown storage protocol {proto!r}")
    if isinstance(e, FileNotFoundError):
        return UserError(f"{where}: no such bucket or path ({first_line(e)})")
    if isinstance(e, PermissionError):
        return UserError(
            f"{where}: access denied, check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            f"or --storage-options): {first_line(e)}"
        )
    return UserError(f"{where}: cannot reach the store ({type(e).__name__}: {first_line(e)})")


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


# Where a storage client's own exception types live: with OSError (which covers missing paths,
# refused access, connection errors and timeouts), what "cannot use this store" raises.
CLIENT_MODULES = {
    "fsspec",
    "s3fs",
    "botocore",
    "aiobotocore",
    "boto3",
    "gcsfs",
    "google",
    "adlfs",
    "azure",
    "aiohttp",
    "requests",
    "urllib3",
}


def is_storage_error(e: BaseException) -> bool:
    """Whether `e` says a store cannot be used (a missing client, an unknown protocol, a missing
    bucket, refused credentials, an unreachable endpoint) rather than a bug in PKS."""
    if isinstance(e, (OSError, ImportError)):
        return True
    if isinstance(e, ValueError) and "protocol" in str(e).lower():
        return True
    return any(c.__module__.split(".")[0] in CLIENT_MODULES for c in type(e).__mro__)


@contextlib.contextmanager
def storage_errors(where: str):
    """Store failures as one-line user errors (for the driver's early checks). Anything else is
    a bug and keeps its traceback."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        if not is_storage_error(e):
            raise
        raise user_error(where, e) from None


def filesystem(url: str, options: dict | None = None):
    """The fsspec filesystem for `url` and the path inside it. Listings are never cached: the
    driver lists parts that workers wrote after its previous listing."""
    import fsspec

    opts = dict(options or {})
    if protocol(url) in ("s3", "s3a"):
        opts.setdefault("use_listings_cache", False)
    fs, path = fsspec.core.url_to_fs(url, **opts)
    return fs, path


@dataclass(frozen=True)
class Store:
    """OUT: a local folder (root is its absolute path) or an object-store prefix (root is a URL).
    Picklable, so Ray tasks get it as an argument (its storage options travel with it)."""

    root: str
    options: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def local(self) -> bool:
        return not is_url(self.root)

    @functools.cached_property
    def _fs(self):
        return filesystem(self.root, self.options)

    @property
    def fs(self):
        return self._fs[0]

    def path(self, rel: str = "") -> str:
        """The full path of a key: a local path, or the filesystem's path (bucket/prefix/key)."""
        if self.local:
            return os.path.join(self.root, rel) if rel else self.root
        base = self._fs[1].rstrip("/")
        return f"{base}/{rel}" if rel else base

    def url(self, rel: str = "") -> str:
        """A key as the user would name it (a local path or a URL)."""
        return self.path(rel) if self.local else (f"{self.root}/{rel}" if rel else self.root)

    def check(self) -> None:
        """Fail early, in one line, when OUT cannot be written: a small probe object is written
        and removed (a missing bucket, refused credentials or an unreachable endpoint show here)."""
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            return
        with storage_errors(self.root):
            probe = self.path(".pks-write-check")
            self.fs.pipe_file(probe, b"")
            self.fs.rm_file(probe)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel)) if self.local else self.fs.exists(self.path(rel))

    def list(self, rel: str) -> list[str]:
        """Names of the files directly in a folder (sorted; [] when there is none)."""
        return sorted(self.stats(rel))

    def stats(self, rel: str) -> dict[str, tuple[int, int]]:
        """{name: (size, mtime_ns)} of the files directly in a folder, from one listing. On an
        object store mtime is the object's LastModified (whole seconds on S3)."""
        if self.local:
            try:
                with os.scandir(self.path(rel)) as it:
                    return {e.name: (st.st_size, st.st_mtime_ns) for e in it if e.is_file() for st in (e.stat(),)}
            except FileNotFoundError:
                return {}
        try:
            entries = self.fs.ls(self.path(rel), detail=True)
        except FileNotFoundError:
            return {}
        return {
            e["name"].rstrip("/").rsplit("/", 1)[-1]: (int(e["size"]), mtime_ns(e))
            for e in entries
            if e["type"] == "file"
        }

    def stats_table(self, rel: str, chunk: int = 1 << 16) -> pa.Table:
        """stats() as a table (name, size, mtime_ns), gathered a chunk at a time: at 10^6 files
        the dict's Python objects take ~300 MB, the table's columns ~60."""
        schema = pa.schema(
            [pa.field(k, t) for k, t in (("name", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()))]
        )
        if not self.local:
            listed = self.stats(rel)
            return pa.table(
                [list(listed), [v[0] for v in listed.values()], [v[1] for v in listed.values()]], schema=schema
            )
        tables: builtins.list[pa.Table] = []
        cols: tuple[builtins.list, builtins.list, builtins.list] = ([], [], [])
        try:
            with os.scandir(self.path(rel)) as it:
                for e in it:
                    if e.is_file():
                        st = e.stat()
                        for c, v in zip(cols, (e.name, st.st_size, st.st_mtime_ns)):
                            c.append(v)
                        if len(cols[0]) >= chunk:
                            tables.append(pa.table(list(cols), schema=schema))
                            cols = ([], [], [])
        except FileNotFoundError:
            pass
        tables.append(pa.table(list(cols), schema=schema))
        return pa.concat_tables(tables).combine_chunks()

    def batches(self, rel: str, schema=None, columns: builtins.list[str] | None = None, batch_size: int = 8192):
        """A Parquet file's rows as record batches, read a row group at a time as they are
        consumed, nothing read ahead (a dataset scan, or ParquetFile's default pre-buffering,
        holds much of the file). `columns`, or with `schema` its columns in its order, a column
        the file lacks read as null (as read_table(schema=...))."""
        with self.open(rel) as f:
            pf = pq.ParquetFile(f, pre_buffer=False)
            have = set(pf.schema_arrow.names)
            names = columns or (schema.names if schema is not None else pf.schema_arrow.names)
            schema = pa.schema([schema.field(c) for c in names]) if schema is not None else None
            for b in pf.iter_batches(batch_size=batch_size, columns=[c for c in names if c in have], use_threads=False):
                if schema is not None:
                    b = pa.RecordBatch.from_arrays(
                        [
                            b.column(c).cast(schema.field(c).type)
                            if c in have
                            else pa.nulls(b.num_rows, schema.field(c).type)
                            for c in names
                        ],
                        schema=schema,
                    )
                yield b

    def find(self, rel: str) -> builtins.list[str]:  # (`list` here is the method above)
        """Keys (relative to the root) of every file under a folder, sorted."""
        if self.local:
            folder = Path(self.path(rel))
            return sorted(str(p.relative_to(self.root)) for p in folder.rglob("*") if p.is_file())
        base = self.path()
        return sorted(p[len(base) + 1 :] for p in self.fs.find(self.path(rel)))

    def open(self, rel: str, mode: str = "rb"):
        return open(self.path(rel), mode) if self.local else self.fs.open(self.path(rel), mode)

    def read_bytes(self, rel: str) -> bytes:
        return Path(self.path(rel)).read_bytes() if self.local else self.fs.cat_file(self.path(rel))

    def read_table(self, rel: str, **kw):
        if self.local:
            return pq.read_table(self.path(rel), **kw)
        with self.open(rel) as f:
            return pq.read_table(f, **kw)

    @contextlib.contextmanager
    def writing(self, rel: str) -> Iterator[Path]:
        """Write a file at `rel` atomically: yields a local path to write; when the block ends
        without an error the file appears at `rel` whole (rename locally, one upload on an
        object store), else it is removed and `rel` is untouched."""
        if self.local:
            with atomic_path(Path(self.path(rel))) as tmp:
                yield tmp
            return
        tmpdir = tempfile.mkdtemp(prefix="pks-put-")
        try:
            tmp = Path(tmpdir) / Path(rel).name
            yield tmp
            self.fs.put_file(str(tmp), self.path(rel))
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.writing(rel) as tmp:
            tmp.write_bytes(data)

    def append_text(self, rel: str, text: str) -> None:
        """Append to a small text file (JSONL here). A last line torn by a kill is closed first,
        so the new text starts on a line of its own rather than being glued to the torn one. An
        object cannot be appended to: it is rewritten whole (one PUT), so a reader sees the old
        or the new text, never a torn one."""
        if self.local:
            with open(self.path(rel), "a+b") as f:
                torn = False
                if end := f.seek(0, os.SEEK_END):
                    f.seek(end - 1)
                    torn = f.read(1) != b"\n"
                f.write((("\n" if torn else "") + text).encode())
            return
        old = self.read_bytes(rel).decode() if self.exists(rel) else ""
        self.write_bytes(rel, (old + "\n" * (bool(old) and not old.endswith("\n")) + text).encode())

    def read_jsonl(self, rel: str) -> builtins.list[dict]:
        """The entries of a JSONL file ([] when there is none); see `jsonl_entries`."""
        return jsonl_entries(self.read_bytes(rel).decode()) if self.exists(rel) else []

    def move(self, rel: str, to: str) -> None:
        """Move a file to another key (a rename locally; copy then delete on an object store)."""
        if self.local:
            Path(self.path(to)).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path(rel), self.path(to))
        else:
            self.fs.mv(self.path(rel), self.path(to))

    def remove(self, rel: str) -> None:
        if self.local:
            Path(self.path(rel)).unlink(missing_ok=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path(rel))

    def upload_tree(self, folder: Path) -> None:
        """Upload every file under a local folder to the same keys (one PUT per object)."""
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                self.fs.put_file(str(p), self.path(str(p.relative_to(folder))))


TMP_MARK = ".tmp-"  # in the name of every file being written (a killed writer's leftovers carry it)


class AtomicFile:
    """The one way a local file is written atomically and durably: write `tmp` (beside `final`,
    its name unique per writer), then `commit()` flushes it to disk (fsync), renames it to
    `final` and flushes the rename (fsync of the folder), or `abort()` removes it and leaves
    `final` untouched. Without the fsyncs a power loss can leave `final` renamed but empty. For a
    write inside one block, `atomic_path`; for one that spans a stream (a clip written frame by
    frame), this object."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        # unique across hosts: a retried task may run while the attempt it replaces, on a node
        # taken for dead, is still writing
        self.tmp = self.final.with_name(f"{self.final.name}{TMP_MARK}{uuid.uuid4().hex}")

    def commit(self) -> None:
        try:
            with open(self.tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.final)
            fsync_dir(self.final.parent)
        finally:
            self.abort()

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yields a temporary path to write; when the block ends without an error the file appears
    at `final` whole and durably (AtomicFile.commit), on an error it is removed."""
    f = AtomicFile(final)
    try:
        yield f.tmp
    except BaseException:
        f.abort()
        raise
    f.commit()


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def jsonl_entries(text: str) -> list[dict]:
    """The JSON objects of JSONL text, skipping lines that do not parse: a line torn by a kill
    (or a power loss) mid-write loses that entry, never the whole file."""
    entries = []
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict):
            entries.append(e)
    return entries


def mtime_ns(info: dict) -> int:
    """An object's modification time in ns from an fsspec info dict (0 when it has none)."""
    t = info.get("LastModified") or info.get("mtime") or info.get("updated")
    if t is None:
        return 0
    if hasattr(t, "timestamp"):
        return int(t.timestamp()) * 10**9 + t.microsecond * 1000
    return int(float(t) * 1e9)


def as_store(out: str | Path | Store, options: dict | None = None) -> Store:
    """A Store for OUT: itself, or a local folder (resolved), or a URL (with its options)."""
    if isinstance(out, Store):
        return out
    if is_url(out):
        return Store(str(out).rstrip("/"), dict(options or {}))
    return Store(str(Path(str(out).removeprefix("file://")).resolve()))


def parse_options(text: str | None) -> dict:
    """--storage-options: a JSON object of fsspec keyword arguments."""
    if not text:
        return {}
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--storage-options must be a JSON object: {e.msg}") from None
    if not isinstance(opts, dict):
        raise UserError("--storage-options must be a JSON object, e.g. '{\"anon\": false}'")
    return opts


def input_options(store: Store | None, path: str) -> dict:
    """The storage options for an input URL: OUT's, when the input uses OUT's protocol."""
    return store.options if store is not None and protocol(path) == protocol(store.root) else {}


def open_input(path: str, store: Store | None = None):
    """Open an input video (a local path or a URL) for reading bytes."""
    if not is_url(path):
        return open(path.removeprefix("file://"), "rb")
    fs, p = filesystem(path, input_options(store, path))
    return fs.open(p, "rb")


def input_stamp(path: str, store: Store | None = None) -> dict:
    """What cheaply tells a changed input from an unchanged one: size and mtime_ns of a local
    file, size and version (ETag, else its modification time) of a remote object. OSError when
    it cannot be read."""
    if not is_url(path):
        st = os.stat(path)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    fs, p = filesystem(path, input_options(store, path))
    try:
        info = fs.info(p)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 (HTTP and cloud clients raise their own types)
        raise OSError(str(e)) from None
    version = info.get("ETag") or info.get("LastModified") or info.get("Last-Modified") or info.get("mtime")
    return {"size": info.get("size"), "version": str(version or "")}


@contextlib.contextmanager
def staged(out: Store, source: str) -> Iterator[tuple[Path, str]]:
    """What a worker reads and writes for one video: (a local folder standing for OUT, a local
    path of the source). Local OUT and input: OUT itself and the input, nothing copied. A
    remote input is downloaded into a scratch folder (PyAV seeks; the download is removed
    after). A remote OUT: the worker writes into a scratch folder whose files are uploaded when
    the block ends without an error (clips, embeddings, caption cache), so the caller writes
    the video's part after it: the part, its commit, never names an object that is missing."""
    with contextlib.ExitStack() as stack:
        scratch = None
        if is_url(source) or not out.local:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pks-work-")))
        local_src = source
        if is_url(source):
            fs, p = filesystem(source, input_options(out, source))
            assert scratch is not None  # made above for a URL source
            local_src = str(scratch / "input" / (Path(p).name or "video"))
            Path(local_src).parent.mkdir()
            with contextlib.suppress(OSError):  # unreadable now: ingest records the video's error
                fs.get_file(p, local_src)
        if out.local:
            work = Path(out.root)
        else:
            assert scratch is not None  # made above for a remote OUT
            work = scratch / "out"
        work.mkdir(exist_ok=True)
        yield work, local_src
        if not out.local:
            out.upload_tree(work)
