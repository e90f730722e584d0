"""Loads a workflow (API prompt, or UI workflow converted with the server's /object_info) and makes one copy per
prompt: the prompt text, a per-item seed, a predictable ``filename_prefix`` and the user's ``--set`` overrides.
Everything is checked up front so a typo fails in a second with exit code 2 rather than on the server, once
per prompt (or per video of a ``--videos`` folder). Nodes are named by id, title or class_type in ``--set``,
``--prompt-target`` and ``--video-target``."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import InputError
from .graphcheck import check_graph, check_structure
from .inputfiles import read_input
from .jsonvalues import JsonProblem, loads
from .nodedefs import NodeDefs
from .uigraph import UiWorkflow, convert, is_ui_workflow

TEXT_ENCODE = "FlashVideoTextEncode"
LOAD_VIDEO = "LoadVideo"
SAVE_VIDEO = "SaveVideo"
REF_HELP = "NODE.INPUT where NODE is a node id, its title or its class_type, e.g. 12.steps or 'Stage I model.attention'"

Graph = dict[str, dict[str, Any]]


def read_json(path: Path) -> tuple[Any, str]:
    """The parsed file and its sha256, or an InputError that says what is wrong with it."""
    data = read_input(path, "workflow")
    try:
        parsed = loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}); is this a workflow JSON?") from None
    except JsonProblem as e:
        where = f"{path}:{e.line}:{e.column}" if e.syntax else str(path)
        raise InputError(f"{where}: {e}; is this a workflow JSON?") from None
    return parsed, hashlib.sha256(data).hexdigest()


def check_api_graph(graph: Any, path: Path) -> Graph:
    """An API-format graph's shape, links and the absence of loops (graphcheck; the server's definitions are
    checked once the server is known)."""
    return check_structure(graph, str(path))


@dataclass
class Workflow:
    graph: Graph  # the API prompt
    sha256: str  # of the file as given
    ui: Optional[UiWorkflow] = None  # set when the file was a UI workflow


def load_workflow(path: Path, node_defs: Callable[[], NodeDefs]) -> Workflow:
    """The workflow as an API prompt; ``node_defs()`` (the server's node definitions) is only called for a
    UI workflow: an API one is only checked for its structure here (``check_plan`` does the rest)."""
    data, sha = read_json(path)
    if is_ui_workflow(data):
        ui = convert(data, node_defs(), str(path))
        return Workflow(ui.graph, sha, ui)
    return Workflow(check_api_graph(data, path), sha)


def title_of(node: dict) -> Optional[str]:
    meta = node.get("_meta")
    return meta.get("title") if isinstance(meta, dict) and isinstance(meta.get("title"), str) else None


def _describe(graph: Graph, node_id: str) -> str:
    title = title_of(graph[node_id])
    node = graph[node_id]["class_type"]
    return f"{node_id} ({node}{', ' + repr(title) if title and title != node else ''})"


def _split_ref(graph: Graph, ref: str, option: str) -> tuple[str, str]:
    """``NODE.INPUT`` -> (node id, input). NODE: an id (exact; ids win), else a title or class_type that names
    exactly one node. Titles may contain dots: every split that names a node is considered."""
    matches: list[tuple[str, str]] = []
    for i, char in enumerate(ref):
        if char != "." or i == 0 or i == len(ref) - 1:
            continue
        node, name = ref[:i], ref[i + 1:]
        if node in graph:
            matches.append((node, name))
            continue
        matches += [(n, name) for n, d in graph.items() if title_of(d) == node or d["class_type"] == node]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        if "." not in ref.strip("."):
            raise InputError(f"{option} {ref!r}: expected {REF_HELP}")
        raise InputError(f"{option} {ref!r}: no node with that id, title or class_type in the workflow (nodes: "
                         f"{'; '.join(_describe(graph, n) for n in graph)})")
    raise InputError(f"{option} {ref!r} is ambiguous: it names " + ", ".join(
        f"node {_describe(graph, n)} input {name!r}" for n, name in matches) + "; use the node id instead")


def _named_targets(graph: Graph, refs: list[str], option: str) -> list[tuple[str, str]]:
    """``NODE.INPUT`` refs that must name an input the node has (where a per-item value goes)."""
    targets = []
    for ref in refs:
        node_id, name = _split_ref(graph, ref, option)
        inputs = graph[node_id]["inputs"]
        if name not in inputs:
            raise InputError(f"{option} {ref!r}: node {node_id} ({graph[node_id]['class_type']}) has no "
                             f"input {name!r} (inputs: {', '.join(inputs) or 'none'})")
        targets.append((node_id, name))
    return targets


def parse_targets(graph: Graph, refs: list[str], required: bool = True) -> list[tuple[str, str]]:
    """Where each prompt goes: ``--prompt-target`` refs if given, else every FlashVideoTextEncode's prompt.
    ``required=False`` (a video batch without prompts) allows none."""
    if refs:
        return _named_targets(graph, refs, "--prompt-target")
    targets = [(node_id, "prompt") for node_id, node in graph.items() if node["class_type"] == TEXT_ENCODE]
    if not targets and required:
        raise InputError(f"the workflow has no {TEXT_ENCODE} node to put the prompt in; name the input with "
                         "--prompt-target NODE.INPUT")
    return targets


def parse_video_targets(graph: Graph, refs: list[str]) -> list[tuple[str, str]]:
    """Where each uploaded video goes: ``--video-target`` refs if given, else every LoadVideo's ``file``."""
    if refs:
        return _named_targets(graph, refs, "--video-target")
    targets = [(node_id, "file") for node_id, node in graph.items() if node["class_type"] == LOAD_VIDEO]
    if not targets:
        raise InputError(f"--videos: the workflow has no {LOAD_VIDEO} node to put the videos in; add a Load Video "
                         "node, or name the input that takes the file with --video-target NODE.INPUT")
    return targets


def parse_sets(graph: Graph, items: list[str]) -> list[tuple[str, str, Any]]:
    """``--set NODE.INPUT=VALUE`` overrides; VALUE is JSON if it parses (20, 7.5, true, ["4", 0]), else a string."""
    sets = []
    for item in items:
        ref, eq, raw = item.partition("=")
        if not eq:
            raise InputError(f"--set {item!r}: expected NODE.INPUT=VALUE with {REF_HELP}")
        node_id, name = _split_ref(graph, ref, "--set")
        try:
            value = loads(raw)
        except JsonProblem as e:
            if not e.syntax:  # NaN, Infinity, 1e999, nested too deeply: JSON, but not a value to send
                raise InputError(f"--set {item!r}: the value: {e}") from None
            value = raw  # plain text (a title, a file name)
        sets.append((node_id, name, value))
    return sets


@dataclass
class Plan:
    """How one workflow becomes one graph per prompt."""

    graph: Graph
    targets: list[tuple[str, str]]
    sets: list[tuple[str, str, Any]] = field(default_factory=list)
    keep_seeds: bool = False
    ui: Optional[UiWorkflow] = None  # the UI workflow it came from, if any
    video_targets: list[tuple[str, str]] = field(default_factory=list)  # where a --videos item's file goes

    def extra_data(self, graph: Graph) -> Optional[dict]:
        """``extra_data`` for POST /prompt: the UI workflow showing this item's values, which the server embeds in
        the saved video (drag it into ComfyUI to get the item back). An API-only input has no UI workflow to
        send; the server still embeds the API prompt itself."""
        return {"extra_pnginfo": {"workflow": self.ui.updated(graph)}} if self.ui is not None else None

    def seed_inputs(self) -> list[tuple[str, str]]:
        """Literal ``seed`` inputs (a linked seed, ["node", slot], is left to its source node)."""
        return [(n, "seed") for n, node in self.graph.items()
                if "seed" in node["inputs"] and not isinstance(node["inputs"]["seed"], list)]

    def build(self, prompt: Optional[str], seed: Optional[int], prefix: str, video: Optional[str] = None) -> Graph:
        """The graph for one item. Order: prompt, seeds, video, filename_prefix, then --set (the user wins).
        ``prompt``/``video`` None: left as the workflow has them. Only the nodes it changes are copied (the
        others are shared with the plan's graph, never modified), so an item of a 100,000-node workflow costs
        one pass, not a deep copy."""
        graph = dict(self.graph)

        def inputs(node_id: str) -> dict:
            if graph[node_id] is self.graph[node_id]:
                graph[node_id] = {**self.graph[node_id], "inputs": dict(self.graph[node_id]["inputs"])}
            return graph[node_id]["inputs"]

        if prompt is not None:
            for node_id, name in self.targets:
                inputs(node_id)[name] = prompt
        if seed is not None and not self.keep_seeds:
            for node_id, name in self.seed_inputs():
                inputs(node_id)[name] = seed
        if video is not None:
            for node_id, name in self.video_targets:
                inputs(node_id)[name] = video
        for node_id, node in self.graph.items():
            if node["class_type"] == SAVE_VIDEO or isinstance(node["inputs"].get("filename_prefix"), str):
                inputs(node_id)["filename_prefix"] = prefix
        for node_id, name, value in self.sets:
            inputs(node_id)[name] = copy.deepcopy(value)
        return graph


def check_plan(plan: Plan, defs: NodeDefs, where: str, seeds: tuple[Optional[int], ...] = (0,)) -> None:
    """The one graph check (graphcheck.check_graph) on what the items really submit: the workflow with a
    prompt, ``seeds`` (the first and last item's), an output prefix and a video reference where the batch puts
    them, and every --set, each refusal naming the option that put the value there."""
    origins: dict[tuple[str, str], tuple[str, str]] = {
        (n, name): (f"--set {n}.{name}", "correct or drop that --set") for n, name, _ in plan.sets}
    for n, name in plan.targets:
        origins.setdefault((n, name), (f"input {name!r} (where the prompt goes)",
                                       "name a text input with --prompt-target NODE.INPUT"))
    for n, name in plan.video_targets:
        origins.setdefault((n, name), (f"input {name!r} (where the video goes)",
                                       "name the input that takes the file with --video-target NODE.INPUT"))
    for seed in seeds:
        seeded = dict(origins)
        if seed is not None and not plan.keep_seeds:
            for n, name in plan.seed_inputs():
                seeded.setdefault((n, name), (f"input {name!r} (an item's seed, --seed-base + its index: {seed})",
                                              "pick a --seed-base that keeps every item's seed in range, or pass "
                                              "--keep-seeds"))
        sample = plan.build("a prompt" if plan.targets else None, seed, "flashvideo_queue/check",
                            "flashvideo_batch/video.mp4" if plan.video_targets else None)
        check_graph(sample, defs, where, seeded)
