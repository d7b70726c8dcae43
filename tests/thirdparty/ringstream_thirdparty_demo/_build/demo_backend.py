"""A minimal PEP 517 build backend for the demo package, from the standard library only.

It builds a pure-Python wheel of ``ringstream_thirdparty_demo/`` whose
``.dist-info`` holds METADATA, WHEEL, RECORD and ``entry_points.txt`` (from
``[project.entry-points]`` in ``pyproject.toml``) — what ``importlib.metadata``
reads to find the connectors — and a plain sdist. Nothing else is supported.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "ringstream_thirdparty_demo"


def _project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _stem(project: dict[str, Any]) -> str:
    return f"{re.sub(r'[-_.]+', '_', project['name'])}-{project['version']}"


def _metadata(project: dict[str, Any]) -> bytes:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '')}",
        *(f"Requires-Dist: {d}" for d in project.get("dependencies", [])),
    ]
    return ("\n".join(lines) + "\n").encode()


def _entry_points(project: dict[str, Any]) -> bytes:
    out = []
    for group, items in project.get("entry-points", {}).items():
        out.append(f"[{group}]")
        out += [f"{name} = {value}" for name, value in items.items()]
        out.append("")
    return "\n".join(out).encode()


def _sources() -> dict[str, bytes]:
    return {
        p.relative_to(ROOT).as_posix(): p.read_bytes()
        for p in sorted((ROOT / PACKAGE).rglob("*.py"))
    }


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    project = _project()
    stem = _stem(project)
    info = f"{stem}.dist-info"
    files = _sources()
    files[f"{info}/METADATA"] = _metadata(project)
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: demo_backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/entry_points.txt"] = _entry_points(project)
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    name = f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / name, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return name


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    project = _project()
    stem = _stem(project)
    files = _sources()
    files["pyproject.toml"] = (ROOT / "pyproject.toml").read_bytes()
    files["_build/demo_backend.py"] = Path(__file__).read_bytes()
    files["PKG-INFO"] = _metadata(project)
    name = f"{stem}.tar.gz"
    with tarfile.open(Path(sdist_directory) / name, "w:gz") as tf:
        for path, data in files.items():
            entry = tarfile.TarInfo(f"{stem}/{path}")
            entry.size = len(data)
            tf.addfile(entry, io.BytesIO(data))
    return name
