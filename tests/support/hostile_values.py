"""Hostile (and boundary-valid) values for one node input, derived from its schema alone, each with what a node
must do with it: ``accept`` (a legal value the checks must let through), ``refuse`` (the node's own error naming the
input) or ``contained`` (either, but never a raw exception and never a file outside the node's folder).

The verdict for numbers comes from this module's own reading of the declared range and grid (min, max, step, and
the Setting behind a widget), not from the pack's checks, so a check that lets a bad value through, or refuses a
good one, shows up. Shared by the in-process sweep (tests/test_node_input_sweep.py) and its real-host part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

ACCEPT, REFUSE, CONTAINED = "accept", "refuse", "contained"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "COMBO", "BOOLEAN")
#: values of the wrong JSON type for any widget (a number, text, a list, an object, null, a boolean)
WRONG_TYPES = [("str", "1"), ("list", [1]), ("dict", {"value": 1}), ("None", None)]
TRAVERSAL = ["../../etc/passwd", "/etc/passwd", "..", "sub/../../escape", "~/.bashrc", "C:\\Windows\\win.ini"]
HUGE_TEXT = "x" * 2_000_000


@dataclass
class Case:
    input: str
    label: str
    value: object
    expect: str
    #: other inputs set with this one (e.g. a latent that carries hostile metadata replaces the whole dict)
    also: dict = field(default_factory=dict)


def option(inp, key, default=None):
    """An input's schema option, from the fake host's ``options`` dict or the real host's attribute."""
    options = getattr(inp, "options", None)
    if isinstance(options, dict) and key in options:
        return options[key]
    value = getattr(inp, key, default)
    return default if value is None else value


def grid_of(inp) -> int:
    """The INT grid a widget's value must lie on: its declaration's multiple, else its step (1 if none)."""
    setting = getattr(inp, "flashvideo_setting", None)
    if setting is not None:
        return setting.multiple
    return int(option(inp, "step", 1) or 1)


def number_is_valid(value, kind: str, lo, hi, grid: int = 1) -> bool:
    """This test's oracle: a JSON number of the right kind, finite, in lo..hi and (INT) on lo's grid. Integral
    floats count as INTs (JSON clients send 49.0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if kind == "INT":
        if isinstance(value, float):
            if not value.is_integer():
                return False
            value = int(value)
        return lo <= value <= hi and (value - lo) % grid == 0
    return lo <= value <= hi  # Python compares ints and floats exactly (10**400 > 5.0 holds)


def number_cases(inp, kind: str) -> list:
    lo, hi, default = option(inp, "min"), option(inp, "max"), option(inp, "default")
    grid = grid_of(inp) if kind == "INT" else 1
    values = [("min", lo), ("max", hi), ("default", default), ("below min", lo - 1), ("above max", hi + 1),
              ("negative", -1), ("zero", 0), ("NaN", float("nan")), ("+inf", float("inf")), ("-inf", float("-inf")),
              ("1e308", 1e308), ("-1e308", -1e308), ("2**63", 2**63), ("-2**63", -(2**63)), ("2**64", 2**64),
              ("10**400", 10**400), ("bool True", True), ("bool False", False), *WRONG_TYPES,
              ("numeric string", str(default))]
    if kind == "INT":
        values += [("integral float", float(default)), ("half", lo + 0.5), ("next on grid", lo + grid)]
        if grid > 1:
            values += [("off grid", lo + 1), ("off grid below max", hi - 1)]
    else:
        values += [("int", int(lo) if float(lo).is_integer() else int(hi)), ("off step", lo + 0.0137),
                   ("just below min", lo - 1e-3), ("just above max", hi + 1e-3), ("third", lo + (hi - lo) / 3)]
    return [Case(inp.id, label, value, ACCEPT if number_is_valid(value, kind, lo, hi, grid) else REFUSE)
            for label, value in values]


def combo_cases(inp) -> list:
    options = list(option(inp, "options", []))
    cases = [Case(inp.id, f"option {o!r}", o, ACCEPT) for o in options]
    first = options[0] if options else "x"
    wrong = [("not an option", "not-an-option"), ("empty", ""), ("number", 0), ("float", 1.5), ("bool", True),
             ("list", [first]), ("dict", {"option": first}), ("None", None), ("trailing space", f"{first} "),
             ("NUL", f"{first}\x00"), ("huge", HUGE_TEXT), *((f"traversal {t}", t) for t in TRAVERSAL)]
    if first.upper() not in options:
        wrong.append(("other case", first.upper()))
    return cases + [Case(inp.id, label, value, REFUSE) for label, value in wrong if value not in options]


def string_cases(inp) -> list:
    default = option(inp, "default", "") or "a prompt"
    return [
        Case(inp.id, "default", default, ACCEPT), Case(inp.id, "words", "a cat on a skateboard", ACCEPT),
        Case(inp.id, "unicode", "Kätzchen 日本語 ✓", ACCEPT),
        *(Case(inp.id, label, value, REFUSE) for label, value in [
            ("number", 5), ("float", 1.5), ("bool", True), ("list", ["a"]), ("dict", {"a": 1}), ("None", None),
            ("NUL", "a\x00b"), ("huge", HUGE_TEXT)]),
        *(Case(inp.id, label, value, CONTAINED) for label, value in [
            ("empty", ""), ("dots", "..."), ("long", "y" * 300), *((f"traversal {t}", t) for t in TRAVERSAL)]),
    ]


def widget_cases(inp) -> list:
    kind = inp.io_type
    if kind in ("INT", "FLOAT"):
        return number_cases(inp, kind)
    if kind == "COMBO":
        return combo_cases(inp)
    if kind == "STRING":
        return string_cases(inp)
    if kind == "BOOLEAN":
        return [Case(inp.id, str(v), v, ACCEPT) for v in (True, False)] + [
            Case(inp.id, label, value, REFUSE) for label, value in [("int", 1), ("str", "true"), ("None", None)]]
    raise KeyError(kind)


# ---- link inputs ------------------------------------------------------------------------------------------------

def _filled(shape, value, dtype=torch.float32):
    return torch.full(shape, value, dtype=dtype)


def tensor_cases(name: str, good: torch.Tensor, wrap) -> list:
    """Hostile variants of one tensor input; ``wrap`` puts a tensor where the node reads it (a LATENT dict, a
    CONDITIONING list, ...)."""
    shape = tuple(good.shape)
    nan, inf = good.clone(), good.clone()
    nan.view(-1)[0], inf.view(-1)[-1] = float("nan"), float("inf")
    return [Case(name, label, wrap(value), REFUSE) for label, value in [
        ("NaN", nan), ("Inf", inf), ("int64", good.to(torch.int64) + 300), ("bool", good > 0.5),
        ("complex", good.to(torch.complex64)), ("empty", good[:0]), ("1-D", good.flatten()),
        ("extra dim", good.unsqueeze(0)), ("huge values", _filled(shape, 1e30))]]


def latent_cases(name: str, good: dict) -> list:
    z = good["samples"]
    cases = tensor_cases(name, z, lambda t: {**good, "samples": t})
    cases += [Case(name, label, value, REFUSE) for label, value in [
        ("bare tensor", z), ("no samples", {k: v for k, v in good.items() if k != "samples"}), ("None", None),
        ("str", "latent"), ("list", [z]), ("4 channels", {**good, "samples": z[:, :4]}),
        ("image latent", {**good, "samples": z[:, :, 0]}), ("samples a list", {**good, "samples": z.tolist()})]]
    for key, value in good.items():  # whatever metadata the node's valid latent carries is read: each bad copy refused
        if key == "samples":
            continue
        bad_values = [("NaN", float("nan")), ("negative", -1), ("str", str(value)), ("bool", True), ("huge", 10**400),
                      ("list", [value])] + ([("fraction", value + 0.5)] if isinstance(value, int) else [])
        cases += [Case(name, f"{key} {label}", {**good, key: bad}, REFUSE) for label, bad in bad_values]
    return cases


def image_cases(name: str, good: torch.Tensor) -> list:
    cases = tensor_cases(name, good, lambda t: t)
    cases += [Case(name, label, value, REFUSE) for label, value in [
        ("None", None), ("str", "frames.png"), ("list", good.tolist()), ("RGBA", torch.rand(*good.shape[:3], 4)),
        ("grey", good[..., :1]), ("0..255 float", good * 255), ("-1..1", good * 2 - 1),
        ("int16 300", _filled(good.shape, 300, torch.int16)), ("no height", good[:, :0])]]
    cases += [Case(name, "uint8", (good * 255).round().to(torch.uint8), ACCEPT),
              Case(name, "float64", good.double(), ACCEPT)]
    return cases


def conditioning_cases(name: str, good: list, model_width: bool = True) -> list:
    """``model_width``: the node also has the model, so a prompt of another width (CLIP-L's 768) is refused."""
    context, extra = good[0]
    cases = tensor_cases(name, context, lambda t: [[t, extra]])
    cases += [Case(name, label, value, REFUSE) for label, value in [
        ("None", None), ("str", "a cat"), ("empty list", []), ("empty entry", [[]]), ("no tensor", [[None, {}]]),
        ("bare tensor", context), ("options not a dict", [[context, "strength 1"]]), ("2-D", [[context[0], {}]]),
        ("list tensor", [[context.tolist(), {}]])]]
    cases.append(Case(name, "width 768", [[torch.zeros(*context.shape[:2], 768), {}]],
                      REFUSE if model_width else CONTAINED))
    cases.append(Case(name, "bf16", [[context.to(torch.bfloat16), extra]], ACCEPT))
    return cases


def object_cases(name: str, fakes: list) -> list:
    """Wrong objects on a socket whose value the node only hands on (a VAE, a CLIP, a MODEL, a VIDEO)."""
    return [Case(name, label, value, REFUSE) for label, value in [
        ("None", None), ("str", name), ("int", 3), ("dict", {}), ("object", object()), *fakes]]
