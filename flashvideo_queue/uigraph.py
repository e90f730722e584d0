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
from typing import Any, Optional

from .errors import InputError

CONTROL = "<control_after_generate>"
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
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
                if len(values) > 1 and values[1] in CONTROL_VALUES:
                    values[1] = "fixed"
        return ui


def _literal(inputs: dict, name: str) -> bool:
    return name in inputs and not (isinstance(inputs[name], list) and len(inputs[name]) == 2
                                   and isinstance(inputs[name][0], str))


def _label(node: dict) -> str:
    title = node.get("title")
    return f"node {node.get('id')} {title!r} ({node.get('type')})" if title else f"node {node.get('id')} ({node.get('type')})"


def _widgets(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node type's widgets in the frontend's order, CONTROL after each seed-like widget;
    dynamic-combo specs are returned whole (their nested widgets depend on the chosen value)."""
    inputs = info.get("input") or {}
    order = info.get("input_order") or {k: list(v) for k, v in inputs.items() if isinstance(v, dict)}
    out = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        for name in order.get(section) or []:
            spec = specs.get(name)
            if spec is None:
                continue
            out += _widget_entries(name, spec)
    return out


def _widget_entries(name: str, spec: Any) -> list[tuple[str, list]]:
    if not isinstance(spec, (list, tuple)) or not spec:
        return []
    kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if options.get("hidden") or options.get("forceInput"):
        return []
    if not (isinstance(kind, list) or kind in WIDGET_TYPES or kind == DYNAMIC_COMBO):
        return []
    entries = [(name, list(spec))]
    # older frontends also add the control to any INT named seed / noise_seed (consumed only if its value is one)
    if options.get("control_after_generate") or (kind == "INT" and name in ("seed", "noise_seed")):
        entries.append((CONTROL, []))
    return entries


def _check_value(label: str, name: str, spec: list, value: Any, path: str) -> None:
    """Catch values that do not line up with the server's widget (a workflow saved for another node version)."""
    kind = spec[0]
    if isinstance(kind, list):
        kind = "COMBO"
    expect = {"INT": (int, float), "FLOAT": (int, float), "BOOLEAN": (bool,), "STRING": (str,),
              "COMBO": (str, int, float), DYNAMIC_COMBO: (str, int, float)}.get(kind)
    ok = isinstance(value, expect) if expect else True
    if kind in ("INT", "FLOAT") and isinstance(value, bool):
        ok = False
    if not ok:
        raise InputError(f"{path}: {label}: widget value {value!r} does not fit input {name!r} ({kind}) as this "
                         f"server defines the node: the workflow was saved for another version of it; {FIX}")


class _Converter:
    def __init__(self, ui: dict, object_info: dict, path: str):
        self.ui, self.info, self.path = ui, object_info, path
        self.result = UiWorkflow(ui, {})
        self.nodes: dict[str, dict] = {}
        for node in ui["nodes"]:
            if not isinstance(node, dict) or "id" not in node or not isinstance(node.get("type"), str):
                raise InputError(f"{path}: a node without an id or type ({str(node)[:80]}); {FIX}")
            node_id = str(node["id"])
            if node["type"] in NOTES:
                continue  # frontend-only; their ids may even clash with real nodes
            if node_id in self.nodes:
                raise InputError(f"{path}: two nodes have id {node_id} ({_label(self.nodes[node_id])} and "
                                 f"{_label(node)}); {FIX}")
            self.nodes[node_id] = node
        self.links: dict[Any, tuple[str, int, str, int, Any]] = {}
        for link in ui.get("links") or []:
            if isinstance(link, dict):
                link = [link.get(k) for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")]
            if not isinstance(link, list) or len(link) < 6:
                raise InputError(f"{path}: malformed link {str(link)[:80]}; {FIX}")
            self.links[link[0]] = (str(link[1]), link[2], str(link[3]), link[4], link[5])

    def convert(self) -> UiWorkflow:
        subgraphs = (self.ui.get("definitions") or {}).get("subgraphs") or []
        subgraph_ids = {s.get("id") for s in subgraphs if isinstance(s, dict)}
        for node_id, node in self.nodes.items():
            kind, mode = node["type"], node.get("mode", 0)
            if mode in (MUTED, BYPASSED) or kind in (PRIMITIVE, REROUTE):
                continue
            if kind in subgraph_ids or kind.startswith("workflow>") or kind.startswith("workflow/"):
                raise InputError(f"{self.path}: {_label(node)} is a subgraph or group node, which this client does "
                                 f"not expand; {FIX}")
            if kind not in self.info:
                raise InputError(f"{self.path}: {_label(node)}: the server has no node type {kind!r} (custom node "
                                 "pack not installed there, or a frontend-only node); install it, or " + FIX)
            self.result.graph[node_id] = self.node(node_id, node)
        if not self.result.graph:
            raise InputError(f"{self.path}: no node to run (all muted, bypassed or notes)")
        return self.result

    def node(self, node_id: str, node: dict) -> dict:
        info = self.info[node["type"]]
        label = _label(node)
        values = node.get("widgets_values")
        values = [] if values is None else values
        if not isinstance(values, (list, dict)):
            raise InputError(f"{self.path}: {label}: widgets_values is neither a list nor an object; {FIX}")
        inputs: dict[str, Any] = {}
        slots: list[tuple[int, str]] = []
        widgets = _widgets(info)
        if isinstance(values, dict):
            for name, spec in widgets:
                if name != CONTROL and name in values:
                    if spec[0] == DYNAMIC_COMBO:
                        raise InputError(f"{self.path}: {label}: named widget values with a dynamic input; {FIX}")
                    _check_value(label, name, spec, values[name], self.path)
                    inputs[name] = values[name]
                    slots.append((-1, name))
        else:
            self.positional(label, widgets, values, inputs, slots, 0, "")
        self.result.slots[node_id] = slots
        for socket in node.get("inputs") or []:
            if not isinstance(socket, dict) or socket.get("link") is None:
                continue
            name = (socket.get("widget") or {}).get("name") or socket.get("name")
            source = self.resolve(socket["link"], node, name, set())
            if source is None:
                inputs.pop(name, None)
            elif source[0] == "value":
                inputs[name] = source[1]
                self.result.primitives[(node_id, name)] = source[2]
            else:
                inputs[name] = source[1]
        title = node.get("title") or info.get("display_name") or node["type"]
        return {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}

    def positional(self, label: str, widgets: list, values: list, inputs: dict, slots: list, position: int,
                   prefix: str) -> int:
        """Consume ``values`` from ``position`` for ``widgets``; returns the next position."""
        for index, (name, spec) in enumerate(widgets):
            if name == CONTROL:
                if position < len(values) and values[position] in CONTROL_VALUES:
                    slots.append((position, CONTROL))
                    position += 1
                continue
            full = prefix + name
            if position >= len(values):
                slots.append((position, full))  # not saved (a newer optional input): --set may still add it
                position += 1
                continue
            value = values[position]
            _check_value(label, full, spec, value, self.path)
            inputs[full] = value
            slots.append((position, full))
            position += 1
            if spec[0] == DYNAMIC_COMBO:
                options = spec[1].get("options") or [] if len(spec) > 1 else []
                chosen = next((o for o in options if isinstance(o, dict) and o.get("key") == value), None)
                if chosen is None:
                    raise InputError(f"{self.path}: {label}: {value!r} is not an option of {full!r} on this server "
                                     f"(options: {', '.join(str(o.get('key')) for o in options)}); {FIX}")
                nested = []
                for section in ("required", "optional"):
                    for nested_name, nested_spec in ((chosen.get("inputs") or {}).get(section) or {}).items():
                        nested += _widget_entries(nested_name, nested_spec)
                position = self.positional(label, nested, values, inputs, slots, position, full + ".")
        return position

    def resolve(self, link_id: Any, target: dict, name: str, seen: set) -> Optional[tuple]:
        """Where a link really comes from: ("link", [id, slot]), ("value", v, primitive id) or None (dropped)."""
        if link_id in seen:
            raise InputError(f"{self.path}: {_label(target)} input {name!r}: a loop of reroutes/bypassed nodes; {FIX}")
        seen.add(link_id)
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
            return None
        if source["type"] == REROUTE or mode == BYPASSED:
            sockets = [s for s in source.get("inputs") or [] if isinstance(s, dict)]
            if source["type"] != REROUTE:
                same = sockets[slot:slot + 1] if isinstance(slot, int) and slot < len(sockets) else []
                matching = [s for s in same if s.get("type") == kind] or [
                    s for s in sockets if kind in ("*", None) or s.get("type") == kind]
                sockets = matching
            upstream = next((s for s in sockets if s.get("link") is not None), None)
            if upstream is None:
                if source["type"] == REROUTE:
                    return None
                raise InputError(f"{self.path}: {_label(source)} is bypassed but has no linked input of type {kind} "
                                 f"to pass on to {_label(target)} input {name!r}; un-bypass it, or connect that "
                                 "input elsewhere")
            return self.resolve(upstream["link"], target, name, seen)
        if source["type"] == PRIMITIVE:
            values = source.get("widgets_values") or []
            if not isinstance(values, list) or not values:
                raise InputError(f"{self.path}: {_label(source)} feeding {_label(target)} has no value; {FIX}")
            return ("value", values[0], str(source["id"]))
        return ("link", [origin, slot])


def convert(ui: dict, object_info: dict, path: str) -> UiWorkflow:
    """The API prompt for a UI workflow as the server that sent ``object_info`` defines its nodes."""
    if not is_ui_workflow(ui):
        raise InputError(f"{path}: not a UI workflow (no 'nodes' and 'links')")
    return _Converter(ui, object_info, path).convert()
