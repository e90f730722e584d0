"""Runs a batch: one worker thread per ComfyUI server, each with at most one prompt in flight, all taking the
next pending item from one shared queue, with every state change saved to the manifest first.

``run(Options)`` is the whole command minus argument parsing, so tests and other tools can call it in process
and get a ``Summary`` back; it raises InputError for anything that exit code 2 stands for.

Failure policy (applied by batch.Batch.attempt_failed and the workers):
- rejected graph, execution error, timeout, missing output: the attempt failed; the item goes back to the
  queue until it has had ``retries + 1`` attempts in this run, then it is ``failed``;
- server unreachable for ``server_grace`` seconds: its in-flight item goes back to the queue (that was an
  attempt), its worker stops, the others carry on; with none left the run ends (exit 1) and a rerun resumes;
- Ctrl-C: stop at once, leave in-flight items ``running`` with their prompt_id (the servers keep running
  them; no ``/interrupt`` unless ``interrupt_on_exit``), so the rerun collects their results.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO

from .batch import DEFAULT_SERVER, Batch, Dispatcher, Options, plural
from .client import ComfyClient, normalize_server
from .errors import HttpError, InputError, ServerGone, ServerUnreachable
from .manifest import Manifest, lock_folder, new_item
from .outputs import summarize_files
from .progress import Progress
from .prompts import read_prompts
from .worker import Worker
from .workflow import Plan, load_workflow, parse_sets, parse_targets, unknown_set_inputs

__all__ = ["DEFAULT_SERVER", "Options", "Summary", "run"]


@dataclass
class Summary:
    run_id: str
    manifest_path: Path
    total: int
    done: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    left: list[dict[str, Any]]  # still pending/running: all servers gone, or interrupted
    skipped: int  # already done (files present) before this run started
    interrupted: bool = False
    messages: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 1 if self.failed or self.left else 0

    def report(self) -> str:
        lines = [f"flashvideo_queue run {self.run_id}: {len(self.done)}/{self.total} done "
                 f"({self.skipped} from earlier runs), {len(self.failed)} failed, {len(self.left)} left; "
                 f"manifest {self.manifest_path}"]
        lines += [f"  done    #{i['index']:04d} line {i['line']}: {summarize_files(i['outputs'])}" for i in self.done]
        lines += [f"  FAILED  #{i['index']:04d} line {i['line']} ({plural(i['attempts'], 'attempt')}): {i['error']}"
                  for i in self.failed]
        lines += [f"  left    #{i['index']:04d} line {i['line']} ({i['status']})" for i in self.left]
        return "\n".join(lines + self.messages)


def _servers(urls: list[str]) -> list[str]:
    servers: list[str] = []
    for url in urls or [DEFAULT_SERVER]:
        server = normalize_server(url)
        if server not in servers:
            servers.append(server)
    return servers


def _unreachable_message(server: str, reason: str) -> str:
    client = ComfyClient(server)
    return (f"cannot reach {server}: {reason}; is ComfyUI running? start it with "
            f"python main.py --listen {client.host} --port {client.port}")


def run(opts: Options, stop: Optional[threading.Event] = None, stream: Optional[TextIO] = None,
        tty: Optional[bool] = None) -> Summary:
    """Run (or resume) the batch described by ``opts``. ``stop``, when set, acts like Ctrl-C."""
    stream = stream or sys.stderr
    if opts.retries < 0 or opts.timeout <= 0 or opts.poll_interval <= 0 or opts.server_grace < 0:
        raise InputError("--retries must be >= 0 and --timeout > 0")
    prompts, prompts_sha = read_prompts(Path(opts.prompts))
    graph, workflow_sha = load_workflow(Path(opts.workflow))
    plan = Plan(graph, parse_targets(graph, opts.prompt_targets), parse_sets(graph, opts.sets), opts.keep_seeds)
    servers = _servers(opts.servers)
    folder = Path(opts.output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create --output-dir {folder}: {e.strerror or e}") from None
    settings = {"seed_base": opts.seed_base, "keep_seeds": opts.keep_seeds, "sets": list(opts.sets),
                "prompt_targets": list(opts.prompt_targets)}
    # the run id names the server-side output folder: every input that changes the outputs is part of it
    identity = json.dumps([workflow_sha, prompts_sha, settings], sort_keys=True)
    header = {
        "run_id": hashlib.sha256(identity.encode()).hexdigest()[:12],
        "workflow": {"path": str(opts.workflow), "sha256": workflow_sha},
        "prompts": {"path": str(opts.prompts), "sha256": prompts_sha},
        "settings": settings,
    }
    progress = Progress(stream, len(prompts), tty)
    for ref in unknown_set_inputs(graph, plan.sets):
        progress.log(f"warning: --set {ref}: the node has no such input yet; adding it")
    lock = lock_folder(folder)
    try:
        manifest = None if opts.restart else Manifest.load(folder)
        if manifest is not None:
            manifest.check_same_batch(header)
            manifest.data.update({k: header[k] for k in ("workflow", "prompts")})  # same content, maybe new paths
        else:
            seeds = [None if opts.keep_seeds else opts.seed_base + p.index for p in prompts]
            manifest = Manifest.create(folder, header, [new_item(p, s) for p, s in zip(prompts, seeds)])
        batch = Batch(opts, plan, prompts, manifest, progress)
        return _run_batch(batch, servers, stop)
    finally:
        progress.close()
        if lock is not None:
            lock.close()


def _run_batch(batch: Batch, servers: list[str], stop: Optional[threading.Event]) -> Summary:
    manifest, opts = batch.manifest, batch.opts
    pending: list[int] = []
    recover: list[tuple[int, str]] = []
    skipped = 0
    for item in manifest.items:
        status, index = item["status"], item["index"]
        if status == "done" and all((manifest.folder / name).is_file() for name in item["outputs"]):
            skipped += 1
        elif status == "done" or (status == "running" and item["prompt_id"] and item["server"]):
            recover.append((index, "redownload" if status == "done" else "adopt"))
        else:
            pending.append(index)
    with manifest.lock:
        for index in pending:
            manifest.items[index]["status"] = "pending"
        manifest.save()
    counts = manifest.counts()
    batch.progress.counts(counts["done"], counts["failed"])
    if not pending and not recover:
        return _summary(batch, skipped, ["nothing to do: every item is done and its files are here"])

    clients: list[ComfyClient] = []
    problems: list[str] = []
    for server in servers:
        client = ComfyClient(server, timeout=opts.http_timeout)
        try:
            client.system_stats(timeout=opts.connect_timeout)
            clients.append(client)
        except (ServerUnreachable, HttpError) as e:
            reason = str(e) if isinstance(e, ServerUnreachable) else f"HTTP {e.status} from /system_stats"
            problems.append(_unreachable_message(server, reason))
    if not clients:
        raise InputError(problems[0] if len(problems) == 1 else "no server reachable:\n  " + "\n  ".join(problems))
    for problem in problems:
        batch.log(f"warning: {problem}; going on with the others")

    # Recovery tasks go to their own server's worker; prompts on servers not in use now are checked here, once.
    live = {client.base for client in clients}
    assigned: dict[str, list[tuple[int, str]]] = {}
    others: dict[str, Worker] = {}
    for index, kind in recover:
        server = manifest.items[index]["server"]
        if server in live:
            assigned.setdefault(server, []).append((index, kind))
            continue
        worker = others.get(server)
        if worker is None and server is not None:
            worker = others[server] = Worker(batch, ComfyClient(server, timeout=opts.connect_timeout), 0.0, False)
        requeue = True
        if worker is not None and not worker.gone:
            try:
                requeue = worker.handle(index, kind)
            except ServerGone as e:
                worker.gone = str(e)
            batch.progress.update(worker.client.label, None)
        if requeue:
            batch.update(index, status="pending")
            pending.append(index)
    batch.dispatch = Dispatcher(sorted(pending), assigned)

    workers = [Worker(batch, client) for client in clients]
    try:
        for worker in workers:
            worker.start()
        while any(worker.is_alive() for worker in workers):
            for worker in workers:
                worker.join(0.1)
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        batch.stopping.set()
        batch.dispatch.stop()
        manifest.save()
        in_flight = [i for i in manifest.snapshot() if i["status"] == "running" and i["prompt_id"]]
        if opts.interrupt_on_exit:
            for item in in_flight:
                Worker(batch, ComfyClient(item["server"], timeout=5.0)).cancel(item["prompt_id"])
        for worker in workers:
            worker.join(2.0)
        manifest.save()
        note = ("cancelled on their servers" if opts.interrupt_on_exit
                else "still running on their servers; the rerun collects them")
        return _summary(batch, skipped, [f"interrupted: manifest saved; {len(in_flight)} in-flight item(s) {note}; "
                                         "rerun the same command to resume"], interrupted=True)
    messages = []
    left = [i for i in manifest.items if i["status"] in ("pending", "running")]
    if left:
        messages.append(f"all servers stopped responding with {len(left)} item(s) left; rerun the same command "
                        f"(with a working --server) to resume from {manifest.path}")
    return _summary(batch, skipped, messages)


def _summary(batch: Batch, skipped: int, messages: list[str], interrupted: bool = False) -> Summary:
    items = batch.manifest.snapshot()

    def by(*states: str) -> list[dict[str, Any]]:
        return [i for i in items if i["status"] in states]

    return Summary(batch.run_id, batch.manifest.path, len(items), by("done"), by("failed"), by("pending", "running"),
                   skipped, interrupted, messages)
