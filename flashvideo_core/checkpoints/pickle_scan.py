"""A dry run over a checkpoint pickle's opcodes, before anything is built from it.

torch's weights-only unpickler refuses code, but it still trusts the file's structure: it allocates
whatever size a storage declares, reads strings of any declared length, hashes dict keys of any
depth (a 100k-deep tuple key overflows the C stack in ``hash``; a tuple DAG shared through the memo
makes hashing exponential) and turns damage into raw ``KeyError``/``IndexError``/``EOFError``. This
scanner walks the same opcode subset without building objects, tracking only each stack item's
nesting depth, the work hashing it costs and small constant values, and stops at the first thing
outside the bounds below. It also collects the storages the pickle declares, so their sizes can be
checked against the file before any is allocated.
"""

from __future__ import annotations

import struct
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass, field

#: Bounds no genuine checkpoint comes near (a state dict takes ~25 opcodes per tensor: 3 M allows ~100 k tensors;
#: scanning 3 M opcodes takes a few seconds).
MAX_OPS = 3_000_000
MAX_DEPTH = 100
#: expanded size of one tuple (hashing a tuple walks all of it, shared parts once per reference)
MAX_TUPLE_SIZE = 100_000
#: total hashing work over all dict keys and set/Counter/OrderedDict arguments
MAX_HASH_WORK = 20_000_000
#: keys that could be crafted to collide (tuples, integers wider than 8 bytes)
MAX_RISKY_KEYS = 10_000
MAX_MEMO = 1_000_000
MAX_GLOBALS = 10_000
#: calls that hash their argument's items
HASHING_CALLS = frozenset({"builtins.set", "collections.Counter", "collections.OrderedDict", "builtins.frozenset"})


class ScanError(Exception):
    """The pickle is outside the bounds; ``kind`` is "truncated", "corrupt", "limit" or "unsupported"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class StorageRef:
    key: str
    type_name: str
    numel: int


@dataclass
class ScanResult:
    globals: set = field(default_factory=set)
    storages: dict = field(default_factory=dict)  # key -> StorageRef
    ops: int = 0
    #: sum of integer arguments to non-tensor constructors (e.g. bytearray(n) allocates n bytes)
    constructor_ints: int = 0
    #: the constant the last scanned pickle evaluates to, when it is a small constant (else None)
    value: object = None


class _Item:
    """What the scanner knows about one stack value."""

    __slots__ = ("depth", "size", "risky", "value", "kind")

    def __init__(self, kind, depth=0, size=1, risky=False, value=None):
        self.kind, self.depth, self.size, self.risky, self.value = kind, depth, size, risky, value


_GLOBAL_NAME_LIMIT = 512
_VALUE_STR_LIMIT = 256

_OPS_NO_ARG = {
    b"N": "none", b"\x88": "bool", b"\x89": "bool", b")": "tuple", b"]": "list", b"}": "dict", b"\x8f": "set",
}
#: opcodes of protocols > 2 and of the text protocols: torch.save never writes them
_OPCODE_NAMES = {
    b"\x95": "FRAME", b"\x94": "MEMOIZE", b"\x93": "STACK_GLOBAL", b"\x8c": "SHORT_BINUNICODE",
    b"\x8d": "BINUNICODE8", b"\x8e": "BINBYTES8", b"B": "BINBYTES", b"C": "SHORT_BINBYTES", b"\x8b": "LONG4",
    b"i": "INST", b"o": "OBJ", b"\x92": "NEWOBJ_EX", b"P": "PERSID", b"I": "INT", b"L": "LONG", b"F": "FLOAT",
    b"S": "STRING", b"V": "UNICODE", b"0": "POP", b"1": "POP_MARK", b"2": "DUP", b"g": "GET", b"p": "PUT",
    b"\x91": "FROZENSET", b"\x90": "ADDITEMS", b"\x82": "EXT1", b"\x83": "EXT2", b"\x84": "EXT4", b"T": "BINSTRING",
    b"l": "LIST", b"d": "DICT", b"\x96": "BYTEARRAY8", b"\x97": "NEXT_BUFFER", b"\x98": "READONLY_BUFFER",
}


class _Reader:
    """Reads at most ``limit`` bytes of ``f``; a short read is truncation."""

    def __init__(self, f, limit: int):
        self.f, self.left = f, limit

    def read(self, n: int) -> bytes:
        if n > self.left:
            raise ScanError("truncated", f"a value declares {n} bytes but only {self.left} remain")
        data = self.f.read(n)
        if len(data) != n:
            raise ScanError("truncated", "the pickle ends early")
        self.left -= n
        return data

    def readline(self) -> bytes:
        data = self.f.readline(min(self.left, _GLOBAL_NAME_LIMIT))
        self.left -= len(data)
        if not data.endswith(b"\n"):
            raise ScanError("truncated" if self.left == 0 else "corrupt", "a GLOBAL name is cut off or too long")
        return data[:-1]


def scan_pickle(f, limit: int, result: ScanResult | None = None) -> ScanResult:
    """Walk one pickle (up to STOP) from file ``f``, reading at most ``limit`` bytes."""
    result = result or ScanResult()
    r = _Reader(f, limit)
    stack: list = []
    metastack: list = []
    memo: dict = {}
    hash_work = risky_keys = 0

    def pop():
        if not stack:
            raise ScanError("corrupt", "stack underflow")
        return stack.pop()

    def top():
        if not stack:
            raise ScanError("corrupt", "stack underflow")
        return stack[-1]

    def pop_mark():
        nonlocal stack
        if not metastack:
            raise ScanError("corrupt", "no MARK to pop to")
        items = stack
        stack = metastack.pop()
        return items

    def made(kind, children, extra_depth=1):
        depth = max((c.depth for c in children), default=0) + extra_depth
        if depth > MAX_DEPTH:
            raise ScanError("limit", f"objects nested more than {MAX_DEPTH} deep")
        if kind == "tuple":
            size = 1 + sum(c.size for c in children)
            if size > MAX_TUPLE_SIZE:
                raise ScanError("limit", f"a tuple expands to more than {MAX_TUPLE_SIZE} items (shared references)")
            risky = any(c.risky or c.kind == "tuple" for c in children)
            value = tuple(c.value for c in children) if len(children) <= 8 and all(
                c.value is not None for c in children) else None
            return _Item(kind, depth, size, risky, value)
        return _Item(kind, depth, 1)

    def grow(container, children):
        """In-place APPEND/SETITEM/BUILD: the container is now as deep as its deepest child + 1."""
        depth = max([container.depth] + [c.depth + 1 for c in children])
        if depth > MAX_DEPTH:
            raise ScanError("limit", f"objects nested more than {MAX_DEPTH} deep")
        container.depth = depth
        container.size = min(container.size + sum(c.size for c in children), 1 << 62)

    def hashed(keys):
        nonlocal hash_work, risky_keys
        for k in keys:
            hash_work += k.size
            if k.risky or k.kind == "tuple":
                risky_keys += 1
        if hash_work > MAX_HASH_WORK:
            raise ScanError("limit", "hashing its dict keys would take unbounded time")
        if risky_keys > MAX_RISKY_KEYS:
            raise ScanError("limit", f"more than {MAX_RISKY_KEYS} tuple or huge-integer keys (hash flooding)")

    while True:
        result.ops += 1
        if result.ops > MAX_OPS:
            raise ScanError("limit", f"more than {MAX_OPS} pickle operations")
        op = r.read(1)
        if op in _OPS_NO_ARG:
            kind = _OPS_NO_ARG[op]
            stack.append(_Item(kind, 1 if kind in ("list", "dict", "set") else 0, value=None if kind != "none" else "None"))
        elif op == b"(":
            metastack.append(stack)
            stack = []
        elif op == b"K":
            stack.append(_Item("int", value=r.read(1)[0]))
        elif op == b"M":
            stack.append(_Item("int", value=struct.unpack("<H", r.read(2))[0]))
        elif op == b"J":
            stack.append(_Item("int", value=struct.unpack("<i", r.read(4))[0]))
        elif op == b"\x8a":
            n = r.read(1)[0]
            data = r.read(n)
            stack.append(_Item("int", risky=n > 8, value=int.from_bytes(data, "little", signed=True) if n <= 16 else None))
        elif op == b"G":
            r.read(8)
            stack.append(_Item("float"))
        elif op == b"X":
            n = struct.unpack("<I", r.read(4))[0]
            data = r.read(n)
            try:
                text = data.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                raise ScanError("corrupt", "a string is not valid UTF-8") from None
            stack.append(_Item("str", value=text if n <= _VALUE_STR_LIMIT else None))
        elif op == b"U":
            data = r.read(r.read(1)[0])
            try:
                text = data.decode("ascii")
            except UnicodeDecodeError:
                raise ScanError("corrupt", "a short string is not ASCII") from None
            stack.append(_Item("str", value=text))
        elif op == b"c":
            try:
                module, name = r.readline().decode("utf-8"), r.readline().decode("utf-8")
            except UnicodeDecodeError:
                raise ScanError("corrupt", "a GLOBAL name is not valid UTF-8") from None
            if (module, name) in NAME_MAPPING:  # protocol-2 pickles name builtins the Python 2 way, as torch maps
                module, name = NAME_MAPPING[(module, name)]
            elif module in IMPORT_MAPPING:
                module = IMPORT_MAPPING[module]
            full = f"{module}.{name}"
            result.globals.add(full)
            if len(result.globals) > MAX_GLOBALS:
                raise ScanError("limit", f"more than {MAX_GLOBALS} distinct globals")
            stack.append(_Item("global", value=("<global>", full)))
        elif op in (b"t", b"\x85", b"\x86", b"\x87"):
            if op == b"t":
                children = pop_mark()
            else:
                n = {b"\x85": 1, b"\x86": 2, b"\x87": 3}[op]
                children = [pop() for _ in range(n)][::-1]
            stack.append(made("tuple", children))
        elif op in (b"a", b"e"):
            children = [pop()] if op == b"a" else pop_mark()
            grow(top(), children)
        elif op in (b"s", b"u"):
            children = [pop(), pop()][::-1] if op == b"s" else pop_mark()
            if len(children) % 2:
                raise ScanError("corrupt", "SETITEMS with an odd number of items")
            target = top()
            if target.kind not in ("dict", "obj"):
                raise ScanError("corrupt", f"SETITEM on a {target.kind}")
            hashed(children[0::2])
            grow(target, children)
        elif op == b"b":
            state = pop()
            grow(top(), [state])
        elif op in (b"R", b"\x81"):
            args = pop()
            func = pop()
            if func.kind != "global" or args.kind != "tuple":
                raise ScanError("corrupt", "a call whose function or arguments are not what torch writes")
            name = func.value[1]
            if name in HASHING_CALLS:
                hashed([args])
            if not name.startswith("torch._utils._rebuild") and not name.startswith("torch._tensor._rebuild"):
                result.constructor_ints += sum(v for v in (args.value or ()) if type(v) is int and v > 0)
            stack.append(made("obj", [func, args]))
        elif op == b"Q":
            pid = pop()
            stack.append(_storage(pid, result))
        elif op in (b"h", b"j"):
            idx = r.read(1)[0] if op == b"h" else struct.unpack("<I", r.read(4))[0]
            if idx not in memo:
                raise ScanError("corrupt", f"memo entry {idx} is read before it is written")
            stack.append(memo[idx])
        elif op in (b"q", b"r"):
            idx = r.read(1)[0] if op == b"q" else struct.unpack("<I", r.read(4))[0]
            memo[idx] = top()
            if len(memo) > MAX_MEMO:
                raise ScanError("limit", f"more than {MAX_MEMO} memo entries")
        elif op == b"\x80":
            proto = r.read(1)[0]
            if proto > 5:
                raise ScanError("corrupt", f"pickle protocol {proto} does not exist")
        elif op == b".":
            if len(stack) != 1 or metastack:
                raise ScanError("corrupt", "STOP with a malformed stack")
            result.value = stack[0].value
            return result
        else:
            name = _OPCODE_NAMES.get(op)
            if name:
                raise ScanError("unsupported", f"uses the pickle opcode {name}, which torch.save never writes")
            raise ScanError("corrupt", f"byte {op!r} is not a pickle opcode")


def _storage(pid: _Item, result: ScanResult) -> _Item:
    """A persistent id must be ('storage', <StorageType>, key, location, numel[, view metadata])."""
    v = pid.value
    if not (isinstance(v, tuple) and len(v) in (5, 6) and v[0] == "storage" and isinstance(v[1], tuple)
            and isinstance(v[2], str) and isinstance(v[4], int) and v[4] >= 0):
        raise ScanError("corrupt", "a tensor storage reference is malformed")
    ref = StorageRef(v[2], v[1][1], v[4])
    old = result.storages.get(ref.key)
    if old is not None and (old.numel, old.type_name) != (ref.numel, ref.type_name):
        raise ScanError("corrupt", f"storage {ref.key!r} is declared twice with different sizes")
    result.storages[ref.key] = ref
    return _Item("storage")
