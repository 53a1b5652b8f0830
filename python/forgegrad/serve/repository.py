"""Models and their versions on disk, in TF Serving's layout, rescanned while the server runs.

    MODEL_DIR/NAME/1/   a forgegrad checkpoint (model.json + model.safetensors) or one .onnx file
    MODEL_DIR/NAME/2/   ...                       (the highest number is served by default)

The path given to ``forgegrad serve`` may be such a root of models, one model's directory (its
subdirectories are numbered versions; ``--model-name`` forces this reading), a single checkpoint
directory or a single .onnx file (served as version 1 of a model named after it). Directories are
rescanned every ``poll_s`` seconds: a new version directory is loaded (off the event loop) and
served as soon as it loads; a removed one is unloaded after answering its queue. A version that
fails to load (say, still being copied) is retried when its files change; copy versions in
atomically (write elsewhere, then rename) as with TF Serving.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from . import models as _models
from ._errors import ServeError

log = logging.getLogger("forgegrad.serve")


@dataclass
class Version:
    number: int
    path: str
    model: _models.LoadedModel
    batcher: object  # batching.Batcher


def _signature(path: str) -> Tuple:
    """Names, sizes and mtimes of a version's files: a failed load is retried when this changes."""
    try:
        if os.path.isfile(path):
            st = os.stat(path)
            return ((os.path.basename(path), st.st_size, st.st_mtime_ns),)
        out = []
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            st = entry.stat()
            out.append((entry.name, st.st_size, st.st_mtime_ns))
        return tuple(out)
    except OSError:
        return ()


def _numbered(path: str) -> Dict[int, str]:
    out = {}
    try:
        entries = list(os.scandir(path))
    except OSError:
        return out
    for e in entries:
        if e.is_dir() and e.name.isascii() and e.name.isdigit() and len(e.name) < 19:  # not "²" (int refuses it)
            out[int(e.name)] = e.path
    return out


def layout(path: str, model_name: Optional[str] = None) -> str:
    """"file", "checkpoint", "model" (one model's numbered versions) or "root" (a directory of models)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"model path not found: {path}")
    if os.path.isfile(path):
        if not path.endswith(".onnx") and os.path.basename(path) != _models.CHECKPOINT_META:
            raise ValueError(f"{path}: expected a directory, an .onnx file or a checkpoint's model.json")
        return "file"
    if model_name is not None or _numbered(path):
        return "model"
    has_ckpt, onnx_files = _models.find_files(path)
    if has_ckpt or onnx_files:
        return "checkpoint"
    return "root"


class Repository:
    """name -> {version number -> Version}. Mutated only on the event loop (scan results are applied
    there), so request handlers read it without locks."""

    def __init__(self, path: str, make_batcher: Callable, backend: str = "auto", threads: Optional[int] = None,
                 model_name: Optional[str] = None, poll_s: float = 1.0, metrics=None):
        self.path = os.path.abspath(path)
        self.kind = layout(self.path, model_name)
        self.backend, self.threads, self.poll_s = backend, threads, poll_s
        self.make_batcher, self.metrics = make_batcher, metrics
        base = os.path.basename(self.path.rstrip(os.sep))
        if self.kind == "file":
            base = os.path.splitext(base)[0] if base.endswith(".onnx") else os.path.basename(os.path.dirname(self.path))
        self.single_name = model_name or base
        self.models: Dict[str, Dict[int, Version]] = {}
        self.failed: Dict[Tuple[str, int], Tuple[Tuple, str]] = {}  # (name, version) -> (signature, error)
        self._task: Optional[asyncio.Task] = None

    # ---- reading -------------------------------------------------------------------------------
    def get(self, name: str, version: Optional[int] = None) -> Version:
        versions = self.models.get(name)
        if not versions:
            known = ", ".join(sorted(self.models)) or "none"
            raise ServeError(404, f"unknown model {name!r} (served: {known})")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise ServeError(404, f"model {name!r} has no version {version} (served versions: "
                                  f"{', '.join(map(str, sorted(versions)))})")
        return versions[version]

    def status(self, name: str, version: Optional[int] = None) -> List[dict]:
        """TF Serving's model_version_status entries."""
        entries = []
        for (n, v), (_sig, err) in self.failed.items():
            if n == name and (version is None or v == version) and v not in self.models.get(name, {}):
                entries.append({"version": str(v), "state": "END",
                                "status": {"error_code": "UNKNOWN", "error_message": err}})
        for v in sorted(self.models.get(name, {}), reverse=True):
            if version is None or v == version:
                entries.append({"version": str(v), "state": "AVAILABLE",
                                "status": {"error_code": "OK", "error_message": ""}})
        if not entries:
            self.get(name, version)  # raises the 404 naming what is served
            raise ServeError(404, f"model {name!r} version {version} not found")
        return sorted(entries, key=lambda e: -int(e["version"]))

    # ---- scanning ------------------------------------------------------------------------------
    def discover(self) -> Dict[str, Dict[int, str]]:
        """What is on disk now: name -> {version -> path} (blocking file-system calls)."""
        if self.kind in ("file", "checkpoint"):
            return {self.single_name: {1: self.path}} if os.path.exists(self.path) else {}
        if self.kind == "model":
            return {self.single_name: _numbered(self.path)}
        out = {}
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return out
        for e in entries:
            if e.is_dir() and not e.name.startswith("."):
                versions = _numbered(e.path)
                if versions:
                    out[e.name] = versions
        return out

    def _plan(self):
        """([(name, version, path, signature) to load], [(name, version) to unload], [failed entries now gone]);
        runs in a thread (file-system calls)."""
        on_disk = self.discover()
        load, unload = [], []
        for name, versions in on_disk.items():
            for v, path in versions.items():
                if v in self.models.get(name, {}):
                    continue
                sig = _signature(path)
                failed = self.failed.get((name, v))
                if failed is not None and failed[0] == sig:
                    continue  # failed before and unchanged since
                load.append((name, v, path, sig))
        for name, versions in self.models.items():
            for v in versions:
                if v not in on_disk.get(name, {}):
                    unload.append((name, v))
        stale = [k for k in self.failed if k[1] not in on_disk.get(k[0], {})]
        return load, unload, stale

    def _load(self, path: str):
        return _models.load(path, self.backend, self.threads)

    async def refresh(self) -> None:
        loop = asyncio.get_running_loop()
        load, unload, stale = await loop.run_in_executor(None, self._plan)
        for name, v, path, sig in load:
            try:
                model = await loop.run_in_executor(None, self._load, path)
            except _models.ModelLoadError as e:
                err = str(e)
            except Exception as e:  # a broken file must not stop the server or the other models
                err = f"{type(e).__name__}: {e}"
            else:
                batcher = self.make_batcher(model, f"{name}/{v}")
                batcher.start()
                self.models.setdefault(name, {})[v] = Version(v, path, model, batcher)
                self.failed.pop((name, v), None)
                log.info("serving %s version %d from %s (%s)", name, v, path, model.backend)
                self._count(name)
                continue
            if self.failed.get((name, v), (None,))[0] != sig:
                log.warning("cannot load %s version %d: %s", name, v, err)
            self.failed[(name, v)] = (sig, err)
        for name, v in unload:
            version = self.models[name].pop(v)
            if not self.models[name]:
                del self.models[name]
            log.info("unloading %s version %d (its directory is gone)", name, v)
            self._count(name)
            await version.batcher.close()
        for k in stale:
            self.failed.pop(k, None)

    def _count(self, name):
        if self.metrics is not None:
            self.metrics.versions(name, len(self.models.get(name, {})))

    async def _poll(self):
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.refresh()
            except Exception:  # keep polling whatever one scan hits
                log.exception("model repository scan failed")

    async def start(self) -> None:
        await self.refresh()
        if self.poll_s > 0 and self.kind != "file":
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="model-repository-poll")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for versions in list(self.models.values()):
            for version in list(versions.values()):
                await version.batcher.close()
        self.models.clear()
