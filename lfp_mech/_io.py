"""Atomic file writes, tables, JSON and hashing: the one set of file helpers every stage uses.

Every artifact is first written to a temporary file in the destination folder and then
renamed over the target (``os.replace`` is atomic on POSIX), so a killed run never leaves
a half-written file under a final name.
"""

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; use the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory; it replaces ``path`` (whole) if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, "torch.Tensor"],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save tensors as safetensors, atomically (never pickle)."""
    from safetensors.torch import save_file  # imports torch: only where tensors are written

    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=dict(metadata) if metadata else None)
    return Path(path)


def load_tensors(path: str | os.PathLike[str], device: str = "cpu") -> dict[str, "torch.Tensor"]:
    """The tensors of a safetensors file."""
    from safetensors.torch import load_file

    return load_file(str(path), device=device)


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable hash of a JSON-serialisable object (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as None and tuples as lists, so it is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """One JSON object per line, atomically."""
    return write_text(path, "".join(json.dumps(json_safe(dict(r))) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def write_table(
    stem: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    digits: int = 4,
) -> Path:
    """Write a table three ways: ``<stem>.csv`` (full precision, for code), ``<stem>.md``
    (``digits`` significant digits, for reading) and ``<stem>.json`` (a list of records).

    ``columns`` picks and orders the columns (default: the keys of the first row, then any new
    keys of later rows). Missing cells are empty in CSV/Markdown and null in JSON. Returns the CSV
    path.
    """
    stem = Path(stem)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    records = [{column: row.get(column) for column in columns} for row in rows]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_csv_cell(r[c]) for c in columns] for r in records)
    write_text(stem.with_suffix(".csv"), buffer.getvalue())
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join(
        "| " + " | ".join(_md_cell(r[c], digits) for c in columns) + " |\n" for r in records
    )
    write_text(stem.with_suffix(".md"), header + body)
    write_json(stem.with_suffix(".json"), json_safe(records))
    return stem.with_suffix(".csv")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(json_safe(value))
    return value


def _md_cell(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    text = json.dumps(json_safe(value)) if isinstance(value, list | tuple | dict) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")
