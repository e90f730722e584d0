"""The one check every graph passes before it is submitted, whether it came from an API file or a converted UI
workflow, with the user's --set values in it: the server would otherwise ignore an unknown input, wait forever
on nothing (a loop), or refuse the same graph once per prompt.

``check_structure`` needs no server (the shape, links to existing nodes, no loop); ``check_graph`` adds the
server's definitions (every node type known, every input one the type has, links to output slots it has,
literal values of the widget's kind). Both are single passes over the nodes, links followed with a stack,
never recursion, so a 100,000-node workflow or a 5,000-node chain costs linear time.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

from .errors import InputError
from .nodedefs import DYNAMIC_COMBO, InputDef, NodeDef, NodeDefs

Graph = dict[str, dict[str, Any]]
MAX_NODES = 250_000  # far beyond any real workflow; keeps a hostile file from taking minutes to refuse
EXPECT = {"INT": "a whole number", "FLOAT": "a number", "BOOLEAN": "true or false", "STRING": "a string",
          "COMBO": "one of its choices (a string or number)", DYNAMIC_COMBO: "one of its choices (a string or number)"}


def node_label(node_id: str, node: dict) -> str:
    """``node 4 'Main sampler' (Sampler)``: the id, the title when it tells more than the type, the type."""
    kind = node.get("class_type") if isinstance(node, dict) else None
    meta = node.get("_meta") if isinstance(node, dict) else None
    title = meta.get("title") if isinstance(meta, dict) else None
    shown = f" {title!r}" if isinstance(title, str) and title and title != kind else ""
    return f"node {node_id}{shown} ({kind})"


def is_link(value: Any) -> bool:
    """A prompt input of the form [source node id, output slot] (what ComfyUI treats as a link)."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


Origins = dict[tuple[str, str], tuple[str, str]]  # (node id, input) -> (how to name it, how to fix it)
SAVED_FIX = "the workflow was saved for another version of the node; open and save it on this server"


def _how(node_id: str, name: str, origins: Origins) -> tuple[str, str]:
    """How a refusal names an input and its fix: by what put the value there (a --set, the seed) if we know."""
    return origins.get((node_id, name), (f"input {name!r}", SAVED_FIX))


def check_structure(graph: Any, where: str, origins: Optional[Origins] = None) -> Graph:
    """An API graph's shape, its links and the absence of loops; returns it (inputs defaulted to {}).
    ``origins``: where values the batch put in came from, so a refusal caused by one names it."""
    origins = origins or {}
    if not isinstance(graph, dict) or not graph:
        raise InputError(f"{where}: expected a JSON object of nodes {{id: {{class_type, inputs}}}} (API format) or a "
                         "UI workflow with 'nodes' and 'links'")
    if len(graph) > MAX_NODES:
        raise InputError(f"{where}: {len(graph):,} nodes, more than the {MAX_NODES:,} this client accepts; split "
                         "the workflow")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise InputError(f"{where}: node {node_id!r} has no class_type; expected an API-format workflow "
                             "(Save (API) in ComfyUI) or a UI workflow with 'nodes' and 'links'")
        if not isinstance(node.setdefault("inputs", {}), dict):
            raise InputError(f"{where}: {node_label(node_id, node)}: 'inputs' is not an object; export the "
                             "workflow again with Save (API)")
    for node_id, node in graph.items():
        for name, value in node["inputs"].items():
            how = _how(node_id, name, origins)[0]
            if isinstance(value, list) and value and isinstance(value[0], str) and len(value) != 2:
                raise InputError(f"{where}: {node_label(node_id, node)} {how}: a link is [node id, output slot], "
                                 f"not {_show(value)}; export the workflow again with Save (API)")
            if is_link(value):
                _check_link_shape(graph, where, node_id, how, value)
    _refuse_loops(graph, where)
    return graph


def _check_link_shape(graph: Graph, where: str, node_id: str, how: str, link: list) -> None:
    source, slot = link
    label = node_label(node_id, graph[node_id])
    if source not in graph:
        raise InputError(f"{where}: {label} {how} is linked to node {source!r}, which the workflow does not "
                         "have; connect it to an existing node or export the workflow again")
    if not isinstance(slot, int) or isinstance(slot, bool) or slot < 0:
        raise InputError(f"{where}: {label} {how} is linked to output {slot!r} of "
                         f"{node_label(source, graph[source])}; an output slot is a whole number from 0")


def _sources(node: dict) -> Iterable[str]:
    return (value[0] for value in node["inputs"].values() if is_link(value))


def _refuse_loops(graph: Graph, where: str) -> None:
    """Kahn's algorithm over the links; what is left after it sits on a loop, one of which is named."""
    waiting = {node_id: 0 for node_id in graph}
    users: dict[str, list[str]] = {node_id: [] for node_id in graph}
    for node_id, node in graph.items():
        for source in _sources(node):
            waiting[node_id] += 1
            users[source].append(node_id)
    ready = [node_id for node_id, count in waiting.items() if count == 0]
    while ready:
        for user in users[ready.pop()]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    left = {node_id for node_id, count in waiting.items() if count}
    if not left:
        return
    path, seen = [next(iter(left))], {}
    while path[-1] not in seen:  # walk back along links that stay in the loop until a node repeats
        seen[path[-1]] = len(path) - 1
        path.append(next(s for s in _sources(graph[path[-1]]) if s in left))
    loop = path[seen[path[-1]]:]
    chain = " <- ".join(node_label(n, graph[n]) for n in loop)
    raise InputError(f"{where}: the links form a loop ({chain}): each node waits on the one before it, so none "
                     "can run; remove one of these links")


def check_graph(graph: Graph, defs: NodeDefs, where: str, origins: Optional[Origins] = None) -> None:
    """Everything ``check_structure`` checks, plus the server's definitions. ``origins``: where values the batch
    put in came from (--set, the seed, the prompt), so a refusal caused by one names it and its fix."""
    origins = origins or {}
    check_structure(graph, where, origins)
    for node_id, node in graph.items():
        label = node_label(node_id, node)
        node_def = defs.get(node["class_type"], f"{where}: {label}")
        known = known_inputs(node_def, node["inputs"], f"{where}: {label}")
        for name, value in node["inputs"].items():
            how, fix = _how(node_id, name, origins)
            item = known.get(name)
            if item is None:
                raise InputError(f"{where}: {label}: {how}: {node_def.class_type} on {defs.server} has no input "
                                 f"{name!r} (its inputs: {', '.join(node_def.names()) or 'none'}); {fix}")
            if is_link(value):
                source = graph[value[0]]
                outputs = defs.get(source["class_type"], f"{where}: {node_label(value[0], source)}").outputs
                if outputs is not None and value[1] >= outputs:
                    raise InputError(f"{where}: {label} {how} is linked to output {value[1]} of "
                                     f"{node_label(value[0], source)}, which has {outputs} output(s) (0 to "
                                     f"{outputs - 1}); connect an existing output")
                continue
            problem = value_problem(item, value)
            if problem:
                raise InputError(f"{where}: {label}: {how}: {problem}; {fix}")


def known_inputs(node_def: NodeDef, inputs: dict, label: str) -> dict[str, InputDef]:
    """The inputs a prompt for this node may set: every top-level one, and inside a dynamic combo the inputs of
    the chosen option (all options' when the choice comes through a link)."""
    known: dict[str, InputDef] = {}
    stack = list(node_def.inputs)
    while stack:
        item = stack.pop()
        known[item.name] = item
        if item.kind != DYNAMIC_COMBO:
            continue
        chosen = inputs.get(item.name)
        if chosen is None or is_link(chosen):
            stack.extend(nested for _, option in item.options for nested in option)
            continue
        option = item.option(chosen)
        if option is None:
            raise InputError(f"{label}: {chosen!r} is not an option of {item.name!r} on this server (options: "
                             f"{', '.join(str(k) for k, _ in item.options)}); pick one of them")
        stack.extend(option)
    return known


def value_problem(item: InputDef, value: Any) -> Optional[str]:
    """Why ``value`` cannot be this widget's value (None if it can): the wrong kind, a list that is not a
    link, a number that is not finite or outside the widget's min/max. A combo's choices are the server's to
    check (a file list may change, an uploaded video is not in it yet)."""
    expect = EXPECT.get(item.kind)
    if expect is None:
        if isinstance(value, list):
            return f"{_show(value)} is neither a value nor a link [node id, output slot]"
        return None  # a socket type given a literal (the server decides) or a custom widget kind
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {"INT": number and (isinstance(value, int) or (math.isfinite(value) and value == int(value))),
          "FLOAT": number and math.isfinite(value), "BOOLEAN": isinstance(value, bool),
          "STRING": isinstance(value, str)}.get(item.kind, isinstance(value, str) or (number and math.isfinite(value)))
    if not ok:
        return f"{_show(value)} does not fit input {item.name!r} ({item.kind}: {expect})"
    if item.kind in ("INT", "FLOAT") and item.low is not None and value < item.low:
        return f"{_show(value)} is below the minimum {item.low} of input {item.name!r}"
    if item.kind in ("INT", "FLOAT") and item.high is not None and value > item.high:
        return f"{_show(value)} is above the maximum {item.high} of input {item.name!r}"
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
