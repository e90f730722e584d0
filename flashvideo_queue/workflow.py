"""Loads an API-format ComfyUI graph and makes one copy per prompt: the prompt text, a per-item seed,
a predictable ``filename_prefix`` and the user's ``--set`` overrides. Everything is checked up front so
a typo fails in a second with exit code 2 rather than on the server, once per prompt."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import InputError

TEXT_ENCODE = "FlashVideoTextEncode"
SAVE_VIDEO = "SaveVideo"
UI_HINT = "this is a UI workflow; use the API twin under example_workflows/api/ or Export (API) in ComfyUI"

Graph = dict[str, dict[str, Any]]


def load_workflow(path: Path) -> tuple[Graph, str]:
    """The graph and the file's sha256, or an InputError that says what is wrong with the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"workflow not found: {path}") from None
    except OSError as e:
        raise InputError(f"cannot read workflow {path}: {e.strerror or e}") from None
    try:
        graph = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}); is this a workflow JSON?") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    if not isinstance(graph, dict) or not graph:
        raise InputError(f"{path}: expected a JSON object of nodes {{id: {{class_type, inputs}}}}")
    if "nodes" in graph and "links" in graph:
        raise InputError(f"{path}: {UI_HINT}")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise InputError(f"{path}: node {node_id!r} has no class_type; is this an API-format workflow? ({UI_HINT})")
        if not isinstance(node.setdefault("inputs", {}), dict):
            raise InputError(f"{path}: node {node_id!r} ({node['class_type']}): 'inputs' is not an object")
    return graph, hashlib.sha256(data).hexdigest()


def _split_ref(graph: Graph, ref: str, option: str) -> tuple[str, str]:
    node_id, dot, name = ref.partition(".")
    if not dot or not node_id or not name:
        raise InputError(f"{option} {ref!r}: expected NODE_ID.INPUT, e.g. 3.prompt")
    if node_id not in graph:
        raise InputError(f"{option} {ref!r}: no node {node_id!r} in the workflow (nodes: {', '.join(graph)})")
    return node_id, name


def parse_targets(graph: Graph, refs: list[str]) -> list[tuple[str, str]]:
    """Where each prompt goes: ``--prompt-target`` refs if given, else every FlashVideoTextEncode's prompt."""
    if refs:
        targets = []
        for ref in refs:
            node_id, name = _split_ref(graph, ref, "--prompt-target")
            inputs = graph[node_id]["inputs"]
            if name not in inputs:
                raise InputError(f"--prompt-target {ref!r}: node {node_id} ({graph[node_id]['class_type']}) has no "
                                 f"input {name!r} (inputs: {', '.join(inputs) or 'none'})")
            targets.append((node_id, name))
        return targets
    targets = [(node_id, "prompt") for node_id, node in graph.items() if node["class_type"] == TEXT_ENCODE]
    if not targets:
        raise InputError(f"the workflow has no {TEXT_ENCODE} node to put the prompt in; name the input with "
                         "--prompt-target NODE_ID.INPUT")
    return targets


def parse_sets(graph: Graph, items: list[str]) -> list[tuple[str, str, Any]]:
    """``--set NODE_ID.INPUT=VALUE`` overrides; VALUE is JSON if it parses (20, 7.5, true, ["4", 0]), else a string."""
    sets = []
    for item in items:
        ref, eq, raw = item.partition("=")
        if not eq:
            raise InputError(f"--set {item!r}: expected NODE_ID.INPUT=VALUE, e.g. 11.steps=5")
        node_id, name = _split_ref(graph, ref, "--set")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        sets.append((node_id, name, value))
    return sets


def unknown_set_inputs(graph: Graph, sets: list[tuple[str, str, Any]]) -> list[str]:
    """--set inputs the node does not have yet (legal: optional inputs are absent from exports; maybe a typo)."""
    return [f"{n}.{name}" for n, name, _ in sets if name not in graph[n]["inputs"]]


@dataclass
class Plan:
    """How one workflow becomes one graph per prompt."""

    graph: Graph
    targets: list[tuple[str, str]]
    sets: list[tuple[str, str, Any]] = field(default_factory=list)
    keep_seeds: bool = False

    def seed_inputs(self) -> list[tuple[str, str]]:
        """Literal ``seed`` inputs (a linked seed, ["node", slot], is left to its source node)."""
        return [(n, "seed") for n, node in self.graph.items()
                if "seed" in node["inputs"] and not isinstance(node["inputs"]["seed"], list)]

    def build(self, prompt: str, seed: Optional[int], prefix: str) -> Graph:
        """A copy of the graph for one item. Order: prompt, seeds, filename_prefix, then --set (the user wins)."""
        graph = copy.deepcopy(self.graph)
        for node_id, name in self.targets:
            graph[node_id]["inputs"][name] = prompt
        if seed is not None and not self.keep_seeds:
            for node_id, name in self.seed_inputs():
                graph[node_id]["inputs"][name] = seed
        for node in graph.values():
            if node["class_type"] == SAVE_VIDEO or isinstance(node["inputs"].get("filename_prefix"), str):
                node["inputs"]["filename_prefix"] = prefix
        for node_id, name, value in self.sets:
            graph[node_id]["inputs"][name] = copy.deepcopy(value)
        return graph
