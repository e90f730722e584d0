"""Runs a batch: one worker thread per ComfyUI server, each with at most one prompt in flight, all taking the
next pending item from one shared queue, with every state change saved to the manifest first.

``run(Options)`` is the whole command minus argument parsing, so tests and other tools can call it in process
and get a ``Summary`` back; it raises InputError for anything that exit code 2 stands for.

Failure policy (applied by batch.Batch.attempt_failed and the workers):
- rejected graph, execution error, timeout, missing output: the attempt failed; the item goes back to the
  queue until it has had ``retries + 1`` attempts in this run, then it is ``failed``;
- server unreachable for ``server_grace`` seconds: its in-flight item goes back to the queue (that was an
  attempt), its worker stops, the others carry on; with none left the run ends (exit 1) and a rerun resumes;
- a local write failure (read-only or deleted output folder, full disk, name too long): stop the run; the item
  keeps its prompt_id so the rerun collects it from the server (batch.Batch.local_failure);
- Ctrl-C: stop at once, leave in-flight items ``running`` with their prompt_id (the servers keep running
  them; no ``/interrupt`` unless ``interrupt_on_exit``), so the rerun collects their results.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO

from .batch import DEFAULT_SERVER, Batch, Dispatcher, Options, plural
from .client import ComfyClient, normalize_server
from .errors import HttpError, InputError, LocalWriteError, ServerGone, ServerUnreachable, Stopped
from .manifest import MANIFEST_NAME, VERSION, Manifest, item_label, lock_folder, new_item
from .outputs import summarize_files
from .progress import Progress
from .prompts import Prompt, read_prompts
from .videos import Video, list_videos, pair_prompts, videos_sha256
from .worker import Worker
from .nodedefs import NodeDefs
from .workflow import Graph, Plan, check_plan, load_workflow, parse_sets, parse_targets, parse_video_targets

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
    local_error: Optional[str] = None  # a local write failure stopped the run

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else 1 if self.failed or self.left or self.local_error else 0

    def report(self) -> str:
        lines = [f"flashvideo_queue run {self.run_id}: {len(self.done)}/{self.total} done "
                 f"({self.skipped} from earlier runs), {len(self.failed)} failed, {len(self.left)} left; "
                 f"manifest {self.manifest_path}"]
        lines += [f"  done    #{i['index']:04d} {item_label(i)}: {summarize_files(i['outputs'])}" for i in self.done]
        lines += [f"  FAILED  #{i['index']:04d} {item_label(i)} ({plural(i['attempts'], 'attempt')}): {i['error']}"
                  for i in self.failed]
        lines += [f"  left    #{i['index']:04d} {item_label(i)} ({i['status']})" for i in self.left]
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


def _node_defs(servers: list[str], opts: Options) -> NodeDefs:
    """The first reachable server's node definitions, which every graph is checked against (all servers must run
    the same node packs anyway)."""
    problems = []
    for server in servers:
        client = ComfyClient(server, timeout=opts.http_timeout)
        try:
            return NodeDefs(client.object_info(), server)
        except ServerUnreachable as e:
            problems.append(_unreachable_message(server, str(e)))
        except HttpError as e:
            problems.append(f"{server}: HTTP {e.status} from /object_info")
    raise InputError("the workflow is checked against a server's node definitions (/object_info), and no server "
                     "answered: " + "; ".join(problems))


def _check_options(opts: Options) -> None:
    for flag, bad in (("--retries", opts.retries < 0), ("--timeout", not 0 < opts.timeout < math.inf),
                      ("--poll-interval", not 0 < opts.poll_interval < math.inf),
                      ("--server-grace", not 0 <= opts.server_grace < math.inf)):
        if bad:  # "not 0 < x < inf" also catches NaN, which every comparison lets through
            kind = "a whole number" if flag == "--retries" else "a finite number of seconds"
            raise InputError(f"{flag} {getattr(opts, flag[2:].replace('-', '_'))!r}: must be {kind} "
                             f"{'>= 0' if flag in ('--retries', '--server-grace') else '> 0'}")
    if opts.rerender and not opts.restart:
        raise InputError("--rerender only goes with --restart")
    if opts.prompts is not None and opts.prompt is not None:
        raise InputError(f"a prompts file ({opts.prompts}) and --prompt: give one or the other")
    if opts.video_targets and opts.videos is None:
        raise InputError("--video-target only goes with --videos DIR")


def _read_prompt_source(opts: Options) -> tuple[list[Prompt], dict[str, Any]]:
    """The prompts (from the file or --prompt) and the manifest's record of where they came from. A --videos
    batch may have none (a workflow without a text prompt); any other batch needs at least one."""
    if opts.prompt is not None:
        text = opts.prompt.strip()
        if not text:
            raise InputError("--prompt is empty; give the prompt text")
        return [Prompt(0, None, text)], {"path": None, "text": text,
                                         "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    if opts.prompts is not None:
        prompts, sha = read_prompts(Path(opts.prompts))
        return prompts, {"path": str(opts.prompts), "sha256": sha}
    if opts.videos is None:
        raise InputError("no prompts: give a prompts file (one prompt per line) or --prompt TEXT")
    return [], {"path": None, "sha256": None}


def _prompt_targets(graph: Graph, opts: Options, prompts: list[Prompt]) -> list[tuple[str, str]]:
    """Where prompts go; a video batch without prompts is refused if the workflow takes one (it would run with
    whatever prompt the workflow was saved with)."""
    if prompts:
        return parse_targets(graph, opts.prompt_targets)
    if opts.prompt_targets:
        raise InputError("--prompt-target without a prompt: give a prompts file or --prompt TEXT")
    takes = parse_targets(graph, [], required=False)
    if takes:
        raise InputError(f"the workflow takes a prompt (node {', '.join(n for n, _ in takes)}) and none was given: "
                         "pass a prompts file (one prompt for every video, or one per video) or --prompt TEXT")
    return []


def _fresh_items(plan: Plan, opts: Options, prompts: list[Prompt], videos: Optional[list[Video]],
                 source: str) -> list[dict[str, Any]]:
    """One manifest item per prompt, or per video (with its paired prompt, if any): seeds SEED_BASE + index."""
    def seed(index: int) -> Optional[int]:
        return None if opts.keep_seeds else opts.seed_base + index

    if videos is None:
        return [new_item(p, seed(p.index), _item_key(plan, p.text, seed(p.index))) for p in prompts]
    items = []
    for index, (video, prompt) in enumerate(zip(videos, pair_prompts(prompts, videos, source, Path(opts.videos)))):
        text, line = (prompt.text, prompt.line) if prompt is not None else (None, None)
        items.append(new_item(Prompt(index, line, text), seed(index),
                              _item_key(plan, text, seed(index), video.expected_reference), video.record()))
    return items


def run(opts: Options, stop: Optional[threading.Event] = None, stream: Optional[TextIO] = None,
        tty: Optional[bool] = None) -> Summary:
    """Run (or resume) the batch described by ``opts``. ``stop``, when set, acts like Ctrl-C."""
    stream = stream or sys.stderr
    _check_options(opts)
    servers = _servers(opts.servers)
    prompts, prompts_section = _read_prompt_source(opts)
    defs: list[NodeDefs] = []  # fetched once, when first needed: a UI workflow's conversion, else the check below

    def node_defs() -> NodeDefs:
        if not defs:
            defs.append(_node_defs(servers, opts))
        return defs[0]

    workflow = load_workflow(Path(opts.workflow), node_defs)
    graph = workflow.graph
    plan = Plan(graph, _prompt_targets(graph, opts, prompts), parse_sets(graph, opts.sets), opts.keep_seeds,
                workflow.ui, parse_video_targets(graph, opts.video_targets) if opts.videos is not None else [])
    videos = list_videos(Path(opts.videos)) if opts.videos is not None else None  # reads every video once
    fresh = _fresh_items(plan, opts, prompts, videos, str(opts.prompts) if opts.prompts is not None else "--prompt")
    seeds = tuple(dict.fromkeys(item["seed"] for item in (fresh[:1] + fresh[-1:]))) or (None,)
    check_plan(plan, node_defs(), str(opts.workflow), seeds)  # the local checks first, then the server's
    folder = Path(opts.output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create --output-dir {folder}: {e.strerror or e}") from None
    settings = {"seed_base": opts.seed_base, "keep_seeds": opts.keep_seeds, "sets": list(opts.sets),
                "prompt_targets": list(opts.prompt_targets)}
    if videos is not None:
        settings["video_targets"] = list(opts.video_targets)
    # the run id names the server-side output folder: every input that changes the outputs is part of it
    identity = [workflow.sha256, prompts_section["sha256"], settings]
    inputs: dict[str, Any] = {"workflow": {"path": str(opts.workflow), "sha256": workflow.sha256},
                              "prompts": prompts_section, "settings": settings}
    if videos is not None:
        inputs["videos"] = {"path": str(opts.videos), "count": len(videos), "sha256": videos_sha256(videos)}
        identity.append(inputs["videos"]["sha256"])
    header = {"run_id": hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12], **inputs}
    progress = Progress(stream, len(fresh), tty)
    lock = lock_folder(folder)
    try:
        manifest = _open_manifest(folder, header, fresh, opts, progress)
        batch = Batch(opts, plan, prompts, manifest, progress, videos)
        return _run_batch(batch, servers, stop)
    finally:
        progress.close()
        if lock is not None:
            lock.close()


def _item_key(plan: Plan, prompt: Optional[str], seed: Optional[int], video: Optional[str] = None) -> str:
    graph = plan.build(prompt, seed, "", video)
    return hashlib.sha256(json.dumps(graph, sort_keys=True).encode()).hexdigest()[:16]


def _open_manifest(folder: Path, header: dict, fresh: list[dict], opts: Options, progress: Progress) -> Manifest:
    """Resume the folder's manifest (checked item by item against this batch), or start one. --restart starts
    over but keeps finished and still-running prompts whose graph is unchanged (--rerender: keeps nothing)."""
    try:
        old = Manifest.load(folder)
    except InputError:
        if not opts.restart:
            raise
        old = None
    try:
        if old is not None and not opts.restart:
            old.check_same_batch(header)
            # maybe new paths; run_id: an edit must not steer the server-side output folder
            old.data.update({k: header[k] for k in ("workflow", "prompts", "videos", "run_id") if k in header})
            for warning in old.reconcile(fresh):
                progress.log(f"warning: {warning}")
            old.save()
            return old
        manifest = Manifest(folder / MANIFEST_NAME, {"version": VERSION, **header, "items": []})
        manifest.data["items"] = old.data["items"] if old is not None and not opts.rerender else []
        manifest.reconcile(fresh, carry={"done", "running"})
        kept = sum(item["status"] != "pending" for item in manifest.items)
        if kept:
            progress.log(f"--restart: {kept} item(s) with an unchanged graph keep their finished or still-running "
                         "prompt (pass --rerender to render them again)")
        manifest.save()
        return manifest
    except LocalWriteError as e:
        raise InputError(f"{e}; make --output-dir {folder} writable or pick another folder") from None


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
        try:
            manifest.save()
        except LocalWriteError as e:
            raise InputError(f"{e}; make --output-dir {manifest.folder} writable or pick another folder") from None
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
        raise InputError(problems[0] if len(problems) == 1 else "no server reachable: " + "; ".join(problems))
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
        if batch.stopping.is_set():
            continue  # a local error: leave the item as recorded, for the rerun
        worker = others.get(server)
        if worker is None and server is not None:
            worker = others[server] = Worker(batch, ComfyClient(server, timeout=opts.connect_timeout), 0.0, False)
        requeue = True
        try:
            if worker is not None and not worker.gone:
                try:
                    requeue = worker.handle(index, kind)
                except ServerGone as e:
                    worker.gone = str(e)
                except Stopped:
                    requeue = False
                batch.progress.update(worker.client.label, None)
            if requeue:
                batch.update(index, status="pending")
                pending.append(index)
        except LocalWriteError as e:
            batch.local_failure(index, e)
    batch.dispatch = Dispatcher(sorted(pending), assigned)
    if batch.stopping.is_set():
        batch.dispatch.stop()

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
        _save(batch)
        in_flight = [i for i in manifest.snapshot() if i["status"] == "running" and i["prompt_id"]]
        if opts.interrupt_on_exit:
            for item in in_flight:
                Worker(batch, ComfyClient(item["server"], timeout=5.0)).cancel(item["prompt_id"])
        for worker in workers:
            worker.join(2.0)
        _save(batch)
        note = ("cancelled on their servers" if opts.interrupt_on_exit
                else "still running on their servers; the rerun collects them")
        return _summary(batch, skipped, [f"interrupted: manifest saved; {len(in_flight)} in-flight item(s) {note}; "
                                         "rerun the same command to resume"], interrupted=True)
    messages = []
    left = [i for i in manifest.items if i["status"] in ("pending", "running")]
    if batch.local_error:
        _save(batch)
        messages.append(f"stopped by a local error: {batch.local_error}; fix it and rerun the same command: finished "
                        f"prompts are collected from the servers, nothing is rendered twice ({manifest.path})")
    elif left:
        messages.append(f"all servers stopped responding with {len(left)} item(s) left; rerun the same command "
                        f"(with a working --server) to resume from {manifest.path}")
    return _summary(batch, skipped, messages)


def _save(batch: Batch) -> None:
    """A last save at the end of a run: a failure is reported, the last good manifest on disk stays valid."""
    try:
        batch.manifest.save()
    except LocalWriteError as e:
        batch.local_failure(None, e)


def _summary(batch: Batch, skipped: int, messages: list[str], interrupted: bool = False) -> Summary:
    items = batch.manifest.snapshot()

    def by(*states: str) -> list[dict[str, Any]]:
        return [i for i in items if i["status"] in states]

    return Summary(batch.run_id, batch.manifest.path, len(items), by("done"), by("failed"), by("pending", "running"),
                   skipped, interrupted, messages, batch.local_error)
