"""The server's node definitions (``/object_info``), read and checked once per node type before anything relies
on them: what a node's inputs are called, which are widgets (and in which order the frontend saves them), what
kind of value each takes, and how many outputs it has. A definition this client cannot read is refused naming
the node type and the server, never followed into an AttributeError later.

Shapes read (ComfyUI 0.3.x V1 and V3 nodes alike): ``input`` {required, optional, hidden} of name -> spec
``[kind, {options}]`` (kind a type name or a list of combo choices), ``input_order`` {section: [names]},
``output`` [types]. A ``COMFY_DYNAMICCOMBO_V3`` spec lists ``options`` [{key, inputs: {required, optional}}]
whose inputs are named ``<combo>.<name>`` in a prompt and may hold further dynamic combos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import InputError

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "file_upload")
MAX_NESTING = 16  # dynamic combos within dynamic combos (ComfyUI's own SaveVideo goes 3 deep)


@dataclass
class InputDef:
    """One input of a node type; ``name`` is its full prompt name (dotted inside a dynamic combo)."""

    name: str
    kind: str  # INT FLOAT STRING BOOLEAN COMBO, DYNAMIC_COMBO, or a socket type (MODEL, LATENT, *, ...)
    required: bool
    widget: bool  # has a widget, so a value in widgets_values (not a forceInput socket)
    hidden: bool = False  # a widget the frontend hides (a compatibility shim): its saved value is not submitted
    control: bool = False  # the frontend saves a control_after_generate value after it
    upload: bool = False  # the frontend saves its upload button's value after it
    force_input: bool = False
    low: Optional[float] = None  # the widget's min / max, where the server gives numbers
    high: Optional[float] = None
    options: list[tuple[Any, list["InputDef"]]] = field(default_factory=list)  # dynamic combo: (key, inputs)

    def option(self, key: Any) -> Optional[list["InputDef"]]:
        return next((inputs for k, inputs in self.options if k == key), None)


@dataclass
class NodeDef:
    class_type: str
    display_name: str
    inputs: list[InputDef]  # top level, in the frontend's order: required, then optional
    outputs: Optional[int]  # None: the server does not say

    def names(self) -> list[str]:
        """Every input a prompt may set, nested ones included (for "its inputs: ..." in refusals)."""
        names, stack = [], list(reversed(self.inputs))
        while stack:
            item = stack.pop()
            names.append(item.name)
            for _, nested in reversed(item.options):
                stack.extend(reversed(nested))
        return list(dict.fromkeys(names))


class NodeDefs:
    """``/object_info`` of one server, each node type checked on first use."""

    def __init__(self, info: Any, server: str):
        if not isinstance(info, dict):
            raise InputError(f"{server}/object_info is not a JSON object of node definitions; is this a ComfyUI "
                             "server? pass another --server")
        self.info, self.server = info, server
        self._defs: dict[str, NodeDef] = {}

    def has(self, class_type: str) -> bool:
        return class_type in self.info

    def get(self, class_type: str, label: str) -> NodeDef:
        """The checked definition; ``label`` names the node that uses it in a refusal."""
        if class_type in self._defs:
            return self._defs[class_type]
        if class_type not in self.info:
            raise InputError(f"{label}: the server {self.server} has no node type {class_type!r} (custom node pack "
                             "not installed there, or a frontend-only node); install it there, or remove the node")
        try:
            node_def = _read(class_type, self.info[class_type])
        except _Malformed as e:
            raise InputError(f"{label}: the server {self.server} describes node type {class_type!r} in a form this "
                             f"client cannot read (/object_info: {e}); update or reinstall the custom node pack "
                             "that provides it there, or use another --server") from None
        self._defs[class_type] = node_def
        return node_def


class _Malformed(Exception):
    pass


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Malformed(f"{where} is a {type(value).__name__}, not an object")
    return value


def _read(class_type: str, entry: Any) -> NodeDef:
    entry = _mapping(entry, "the entry")
    outputs = entry.get("output")
    if outputs is not None and not isinstance(outputs, list):
        raise _Malformed(f"'output' is a {type(outputs).__name__}, not a list")
    display = entry.get("display_name")
    order = _mapping(entry.get("input_order"), "'input_order'")
    for section, names in order.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _Malformed(f"'input_order.{section}' is not a list of names")
    top: list[InputDef] = []
    # (input sections, their order or None, name prefix, list to fill, nesting); a stack, not recursion
    stack = [(_mapping(entry.get("input"), "'input'"), order, "", top, 0)]
    while stack:
        sections, section_order, prefix, out, depth = stack.pop()
        if depth > MAX_NESTING:
            raise _Malformed(f"dynamic inputs nested more than {MAX_NESTING} levels deep at {prefix[:-1]!r}")
        for section in ("required", "optional"):
            specs = _mapping(sections.get(section), f"'input.{section}'" if not prefix else f"{prefix[:-1]!r} inputs")
            names = section_order.get(section, list(specs)) if section_order is not None else list(specs)
            for name in names:
                if name not in specs:
                    continue
                if not isinstance(name, str) or not name:
                    raise _Malformed(f"an input name {name!r} is not a string")
                item = _input(prefix + name, specs[name], section == "required")
                out.append(item)
                if item.kind == DYNAMIC_COMBO:
                    for key, inputs in _choices(item.name, specs[name]):
                        nested: list[InputDef] = []
                        item.options.append((key, nested))
                        stack.append((inputs, None, item.name + ".", nested, depth + 1))
    return NodeDef(class_type, display if isinstance(display, str) and display else class_type, top,
                   len(outputs) if outputs is not None else None)


def _input(name: str, spec: Any, required: bool) -> InputDef:
    if not isinstance(spec, (list, tuple)) or not spec:
        raise _Malformed(f"input {name!r} is {str(spec)[:60]}, not [type, options]")
    kind, options = spec[0], spec[1] if len(spec) > 1 else {}
    if not isinstance(options, dict):
        raise _Malformed(f"input {name!r}: its options are a {type(options).__name__}, not an object")
    if isinstance(kind, list):
        kind = "COMBO"
    if not isinstance(kind, str):
        raise _Malformed(f"input {name!r}: its type is {str(kind)[:40]}, not a name or a list of choices")
    force = bool(options.get("forceInput"))
    widget = (kind in WIDGET_TYPES or kind == DYNAMIC_COMBO) and not force
    # older frontends add the seed control to any INT named seed / noise_seed (consumed only if its value is one)
    control = widget and bool(options.get("control_after_generate") or (kind == "INT" and name.rsplit(".", 1)[-1]
                                                                          in ("seed", "noise_seed")))
    upload = widget and any(options.get(key) for key in UPLOAD_OPTIONS)
    return InputDef(name, kind, required, widget, bool(options.get("hidden")) and widget, control, upload, force,
                    _bound(options.get("min")), _bound(options.get("max")))


def _bound(value: Any) -> Optional[float]:
    """A numeric min/max; anything else (absent, a string, NaN) is no bound."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    return value if number else None


def _choices(name: str, spec: Any) -> list[tuple[Any, dict]]:
    options = spec[1].get("options") if len(spec) > 1 else None
    if not isinstance(options, list):
        raise _Malformed(f"dynamic input {name!r} has no list of options")
    choices = []
    for option in options:
        if not isinstance(option, dict) or not isinstance(option.get("key"), (str, int, float)):
            raise _Malformed(f"dynamic input {name!r}: option {str(option)[:60]} has no key")
        choices.append((option["key"], _mapping(option.get("inputs"), f"option {option['key']!r} of {name!r}")))
    return choices
