"""UI workflow (the ``workflow.json`` the frontend saves: ``nodes``, ``links``, positional ``widgets_values``)
to API prompt, with the server's ``/object_info`` as the only source of widget order, so a workflow saved in
ComfyUI can be batch-queued without "Save (API)".

What the frontend's own export does and this repeats: widgets in input order (required, then optional, hidden
ones skipped), one extra value after each widget with ``control_after_generate`` (the seed's fixed/randomize
control), the selected option's inputs right after a dynamic combo (named ``combo.input``), links as
``[source id, slot]``, muted nodes (mode 2) dropped, bypassed nodes (mode 4) replaced by their input of the
link's type, Reroute followed, a PrimitiveNode's value copied into the inputs it feeds, Note nodes ignored.
Anything else (subgraphs, group nodes, node types the server lacks, values that do not line up with the
server's definition) is refused with the node's id and title and the fix.

The converter also records where every submitted value sits in ``widgets_values`` so the UI workflow sent along
in ``extra_pnginfo`` can show what was really rendered (``UiWorkflow.updated``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from .errors import InputError
from .graphcheck import MAX_NODES, check_graph, is_link, node_label, value_problem
from .nodedefs import DYNAMIC_COMBO, InputDef, NodeDef, NodeDefs

CONTROL = "<control_after_generate>"
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
NOTES = {"Note", "MarkdownNote"}
PRIMITIVE, REROUTE = "PrimitiveNode", "Reroute"
MUTED, BYPASSED = 2, 4
FIX = 'open it in ComfyUI on this server and export it with "Save (API)" (Workflow menu), then pass that file'

Graph = dict[str, dict[str, Any]]


def is_ui_workflow(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


@dataclass
class UiWorkflow:
    """The converted graph plus where each input's value lives in the UI file."""

    ui: dict
    graph: Graph
    slots: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # node id -> [(position, input name)]
    primitives: dict[tuple[str, str], str] = field(default_factory=dict)  # (node id, input) -> PrimitiveNode id

    def updated(self, graph: Graph) -> dict:
        """A copy of the UI workflow whose widget values are the ones in ``graph`` (the submitted prompt), with
        every seed control set to "fixed": dragged back into ComfyUI it shows, and re-renders, this item."""
        ui = copy.deepcopy(self.ui)
        nodes = {str(n.get("id")): n for n in ui["nodes"] if isinstance(n, dict) and n.get("type") not in NOTES}
        for node_id, slots in self.slots.items():
            node, inputs = nodes.get(node_id), graph.get(node_id, {}).get("inputs", {})
            values = node.get("widgets_values") if node else None
            if isinstance(values, dict):
                values.update({name: inputs[name] for _, name in slots if _literal(inputs, name)})
            elif isinstance(values, list):
                for position, name in slots:
                    value = "fixed" if name == CONTROL else inputs.get(name)
                    if name != CONTROL and not _literal(inputs, name):
                        continue
                    if position < len(values):
                        values[position] = copy.deepcopy(value)
                    elif position == len(values):
                        values.append(copy.deepcopy(value))
        for (node_id, name), primitive_id in self.primitives.items():
            values = nodes[primitive_id].get("widgets_values")
            inputs = graph.get(node_id, {}).get("inputs", {})
            if isinstance(values, list) and values and _literal(inputs, name):
                values[0] = copy.deepcopy(inputs[name])
                if len(values) > 1 and _is_control(values[1]):
                    values[1] = "fixed"
        return ui


def _literal(inputs: dict, name: str) -> bool:
    return name in inputs and not is_link(inputs[name])


def _label(node: dict) -> str:
    """A UI node named as graphcheck names every node (``node 4 'Main sampler' (Sampler)``)."""
    return node_label(str(node.get("id")), {"class_type": node.get("type"), "_meta": {"title": node.get("title")}})


def _is_control(value: Any) -> bool:
    """A seed's saved control_after_generate value (any saved value may be a list or object)."""
    return isinstance(value, str) and value in CONTROL_VALUES


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_slot(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


class _Converter:
    def __init__(self, ui: dict, defs: NodeDefs, path: str):
        self.ui, self.defs, self.path = ui, defs, path
        self.result = UiWorkflow(ui, {})
        self.nodes: dict[str, dict] = {}
        if len(ui["nodes"]) > MAX_NODES:
            raise InputError(f"{path}: {len(ui['nodes']):,} nodes, more than the {MAX_NODES:,} this client accepts; "
                             "split the workflow")
        for node in ui["nodes"]:
            if not isinstance(node, dict) or not _is_id(node.get("id")) or not isinstance(node.get("type"), str):
                raise InputError(f"{path}: a node without an id or type ({str(node)[:80]}); {FIX}")
            node_id = str(node["id"])
            if node["type"] in NOTES:
                continue  # frontend-only; their ids may even clash with real nodes
            if node_id in self.nodes:
                raise InputError(f"{path}: two nodes have id {node_id} ({_label(self.nodes[node_id])} and "
                                 f"{_label(node)}); {FIX}")
            if not isinstance(node.get("inputs") or [], list):
                raise InputError(f"{path}: {_label(node)}: 'inputs' is not a list; {FIX}")
            self.nodes[node_id] = node
        self.links: dict[Any, tuple[str, int, str, Any, Any]] = {}
        links = ui.get("links") or []
        if not isinstance(links, list):
            raise InputError(f"{path}: 'links' is not a list; {FIX}")
        for link in links:
            if isinstance(link, dict):
                link = [link.get(k) for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")]
            if not (isinstance(link, list) and len(link) >= 6 and _is_id(link[0]) and _is_id(link[1])
                    and _is_slot(link[2])):
                raise InputError(f"{path}: malformed link {str(link)[:80]}; {FIX}")
            self.links[link[0]] = (str(link[1]), link[2], str(link[3]), link[4], link[5])
        self.resolved: dict[Any, Optional[tuple]] = {}  # link id -> where it really comes from (each walked once)

    def convert(self) -> UiWorkflow:
        subgraphs = _mapping(self.ui.get("definitions")).get("subgraphs")
        subgraph_ids = {s.get("id") for s in subgraphs if isinstance(s, dict) and isinstance(s.get("id"), str)} \
            if isinstance(subgraphs, list) else set()
        for node_id, node in self.nodes.items():
            kind, mode = node["type"], node.get("mode", 0)
            if mode in (MUTED, BYPASSED) or kind in (PRIMITIVE, REROUTE):
                continue
            if kind in subgraph_ids or kind.startswith("workflow>") or kind.startswith("workflow/"):
                raise InputError(f"{self.path}: {_label(node)} is a subgraph or group node, which this client does "
                                 f"not expand; {FIX}")
            if not self.defs.has(kind):
                raise InputError(f"{self.path}: {_label(node)}: the server has no node type {kind!r} (custom node "
                                 "pack not installed there, or a frontend-only node); install it, or " + FIX)
            self.result.graph[node_id] = self.node(node_id, node)
        if not self.result.graph:
            raise InputError(f"{self.path}: no node to run (all muted, bypassed or notes)")
        check_graph(self.result.graph, self.defs, self.path)
        return self.result

    def node(self, node_id: str, node: dict) -> dict:
        label = _label(node)
        node_def = self.defs.get(node["type"], f"{self.path}: {label}")
        values = node.get("widgets_values")
        values = [] if values is None else values
        inputs: dict[str, Any] = {}
        slots: list[tuple[int, str]] = []
        if isinstance(values, dict):
            self.named(label, node_def, values, inputs, slots)
        elif isinstance(values, list):
            self.positional(label, node_def, values, inputs, slots)
        else:
            raise InputError(f"{self.path}: {label}: widgets_values is neither a list nor an object; {FIX}")
        self.result.slots[node_id] = slots
        for socket in node.get("inputs") or []:
            if not isinstance(socket, dict) or socket.get("link") is None:
                continue
            name = _mapping(socket.get("widget")).get("name") or socket.get("name")
            if not isinstance(name, str) or not name or not _is_id(socket["link"]):
                raise InputError(f"{self.path}: {label}: malformed input {str(socket)[:80]}; {FIX}")
            source = self.resolve(socket["link"], node, name)
            if source is None:
                inputs.pop(name, None)
            elif source[0] == "value":
                inputs[name] = source[1]
                self.result.primitives[(node_id, name)] = source[2]
            else:
                inputs[name] = source[1]
        title = node.get("title") if isinstance(node.get("title"), str) and node.get("title") else None
        return {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title or node_def.display_name}}

    def named(self, label: str, node_def: NodeDef, values: dict, inputs: dict, slots: list) -> None:
        """widgets_values saved as {name: value} (some custom nodes): only top-level widgets can be named."""
        widgets = {item.name: item for item in node_def.inputs if item.widget}
        for name, value in values.items():
            item = widgets.get(name)
            if item is None:
                if isinstance(value, dict):
                    continue  # a frontend widget's own state (a preview's settings), never a prompt input
                raise InputError(f"{self.path}: {label}: a saved widget value {name!r}, which {node_def.class_type} "
                                 f"on this server does not have (its widgets: {', '.join(widgets) or 'none'}); {FIX}")
            if item.kind == DYNAMIC_COMBO:
                raise InputError(f"{self.path}: {label}: named widget values with a dynamic input; {FIX}")
            self.check_value(label, item, value)
            if not item.hidden:
                inputs[name] = value
                slots.append((-1, name))

    def check_value(self, label: str, item: InputDef, value: Any) -> None:
        problem = value_problem(item, value)
        if problem:
            raise InputError(f"{self.path}: {label}: widget value {problem} as this server defines the node: the "
                             f"workflow was saved for another version of it; {FIX}")

    def positional(self, label: str, node_def: NodeDef, values: list, inputs: dict, slots: list) -> None:
        """Consume ``values`` in the frontend's widget order: each widget's value, its seed control and upload
        button values where it has them, a dynamic combo's chosen inputs right after it. A stack of input
        lists, not recursion; values left over at the end are refused (they would be dropped)."""
        position = 0
        stack: list[tuple[Any, bool]] = [(iter(node_def.inputs), False)]  # (inputs left, inside a hidden widget)
        while stack:
            item = next(stack[-1][0], None)
            if item is None:
                stack.pop()
                continue
            if not item.widget:
                continue
            hidden = stack[-1][1] or item.hidden
            if position >= len(values):
                if not hidden:
                    slots.append((position, item.name))  # not saved (a newer optional input): --set may still add it
                position += 1
                continue
            value = values[position]
            self.check_value(label, item, value)
            if not hidden:
                inputs[item.name] = value
                slots.append((position, item.name))
            position += 1
            if item.control and position < len(values) and _is_control(values[position]):
                if not hidden:
                    slots.append((position, CONTROL))
                position += 1
            if item.upload and position < len(values) and isinstance(values[position], str):
                position += 1  # the upload button's value ("image"): the frontend's own
            if item.kind == DYNAMIC_COMBO:
                chosen = item.option(value)
                if chosen is None:
                    raise InputError(f"{self.path}: {label}: {value!r} is not an option of {item.name!r} on this "
                                     f"server (options: {', '.join(str(k) for k, _ in item.options)}); {FIX}")
                stack.append((iter(chosen), hidden))
        if position < len(values):
            widgets = [i.name for i in node_def.inputs if i.widget]
            sockets = [i.name for i in node_def.inputs if i.force_input]
            became = f"; {', '.join(sockets)} take(s) only a link (forceInput) on this server: connect it" \
                if sockets else ""
            raise InputError(f"{self.path}: {label}: {len(values)} widget values saved but {node_def.class_type} on "
                             f"this server has widgets for {position} ({', '.join(widgets) or 'none'}); the rest "
                             f"(from {values[position]!r:.60}) would be dropped{became}; {FIX}")

    def resolve(self, link_id: Any, target: dict, name: str) -> Optional[tuple]:
        """Where a link really comes from: ("link", [id, slot]), ("value", v, primitive id) or None (dropped).
        Reroutes and bypassed nodes are followed in a loop; every link on the way remembers the answer, so a long
        chain is walked once however many inputs it feeds."""
        chain, on_chain = [], set()
        result: Optional[tuple] = None
        link = link_id
        while True:
            if link in self.resolved:
                result = self.resolved[link]
                break
            if link in on_chain:
                raise InputError(f"{self.path}: {_label(target)} input {name!r}: a loop of reroutes/bypassed nodes; "
                                 f"{FIX}")
            chain.append(link)
            on_chain.add(link)
            upstream, result = self.step(link, target, name)
            if upstream is None:
                break
            link = upstream
        for passed in chain:
            self.resolved[passed] = result
        return result

    def step(self, link_id: Any, target: dict, name: str) -> tuple[Any, Optional[tuple]]:
        """One link: (the next link to follow, None) through a reroute or bypassed node, else (None, result)."""
        if link_id not in self.links:
            raise InputError(f"{self.path}: {_label(target)} input {name!r} uses link {link_id}, which the "
                             f"workflow does not have; {FIX}")
        origin, slot, _, _, kind = self.links[link_id]
        source = self.nodes.get(origin)
        if source is None:
            raise InputError(f"{self.path}: {_label(target)} input {name!r} is linked to node {origin}, which the "
                             f"workflow does not have; {FIX}")
        mode = source.get("mode", 0)
        if mode == MUTED:
            return None, None
        if source["type"] == REROUTE or mode == BYPASSED:
            sockets = [s for s in source.get("inputs") or [] if isinstance(s, dict)]
            if source["type"] != REROUTE:
                same = sockets[slot:slot + 1]
                matching = [s for s in same if s.get("type") == kind] or [
                    s for s in sockets if kind in ("*", None) or s.get("type") == kind]
                sockets = matching
            upstream = next((s for s in sockets if s.get("link") is not None), None)
            if upstream is None:
                if source["type"] == REROUTE:
                    return None, None
                raise InputError(f"{self.path}: {_label(source)} is bypassed but has no linked input of type {kind} "
                                 f"to pass on to {_label(target)} input {name!r}; un-bypass it, or connect that "
                                 "input elsewhere")
            if not _is_id(upstream["link"]):
                raise InputError(f"{self.path}: {_label(source)}: malformed input {str(upstream)[:80]}; {FIX}")
            return upstream["link"], None
        if source["type"] == PRIMITIVE:
            values = source.get("widgets_values") or []
            if not isinstance(values, list) or not values:
                raise InputError(f"{self.path}: {_label(source)} feeding {_label(target)} has no value; {FIX}")
            if isinstance(values[0], (list, dict)):  # a list would even pass for a link [node id, slot]
                raise InputError(f"{self.path}: {_label(source)} feeding {_label(target)} holds {values[0]!r:.60}, "
                                 f"not a single value; {FIX}")
            return None, ("value", values[0], str(source["id"]))
        return None, ("link", [origin, slot])


def convert(ui: dict, object_info: Union[dict, NodeDefs], path: str) -> UiWorkflow:
    """The API prompt for a UI workflow as the server that sent ``object_info`` defines its nodes, checked
    (graphcheck.check_graph) before it is returned."""
    if not is_ui_workflow(ui):
        raise InputError(f"{path}: not a UI workflow (no 'nodes' and 'links')")
    defs = object_info if isinstance(object_info, NodeDefs) else NodeDefs(object_info, "the server")
    return _Converter(ui, defs, path).convert()
