"""Every file the pack writes goes through io.output_files: links planted at the final name or at any
predictable temporary name are never written through, a failed write leaves nothing and keeps the old file,
paths leaving the output folder are refused, and names are checked with their temporary name before any work."""

from __future__ import annotations

import ast
import json
import os
import stat
from pathlib import Path

import pytest
import torch

from flashvideo_core.checkpoints.io import write_safetensors
from flashvideo_core.enhance.enhancer import Pending
from flashvideo_core.enhance.resume import ResumableOutput
from flashvideo_core.errors import InputError
from flashvideo_core.io.output_files import TEMPORARY_EXTRA_BYTES, check_output_path, output_file, write_bytes
from flashvideo_core.io.video import VideoWriter, concatenate, probe_video, write_video

VICTIM_TEXT = b"must stay as it is"


@pytest.fixture
def victim(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    path = outside / "victim.txt"
    path.write_bytes(VICTIM_TEXT)
    return path


def clip(frames: int = 3) -> torch.Tensor:
    return torch.linspace(-1, 1, 3 * frames * 8 * 8).reshape(3, frames, 8, 8)


def plant_links(folder, name: str, victim) -> list:
    """Links at the final name and at every temporary name an older or simpler writer would use."""
    stem, ext = os.path.splitext(name)
    names = [name, f"{stem}.partial{ext}", f"{name}.partial", f"{name}.tmp", f".{name}.part"]
    for planted in names:
        os.symlink(victim, folder / planted)
    return names


def test_planted_links_are_never_written_through(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    planted = plant_links(out, "clip.mp4", victim)
    write_video(str(out / "clip.mp4"), clip(), folder=str(out))
    assert victim.read_bytes() == VICTIM_TEXT
    final = out / "clip.mp4"
    assert final.is_file() and not final.is_symlink() and probe_video(str(final)).frames == 3
    assert all((out / name).is_symlink() for name in planted[1:])  # other people's links are left alone

    plant_links(out, "weights.safetensors", victim)
    write_safetensors(str(out / "weights.safetensors"), {"w": torch.ones(2)}, {})
    assert victim.read_bytes() == VICTIM_TEXT and not (out / "weights.safetensors").is_symlink()


def test_the_temporary_file_lives_in_a_fresh_private_folder(tmp_path):
    seen = {}
    with output_file(str(tmp_path / "a.bin")) as temporary:
        private = os.path.dirname(temporary)
        seen["mode"] = stat.S_IMODE(os.lstat(private).st_mode)
        seen["entries"] = os.listdir(private)
        with open(temporary, "wb") as f:
            f.write(b"x")
    assert seen == {"mode": 0o700, "entries": []}
    assert os.listdir(tmp_path) == ["a.bin"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode) == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    final = tmp_path / "clip.mp4"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(str(final), 8) as writer:
            writer.write(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
            raise RuntimeError("boom")
    with pytest.raises(InputError, match="no frames"):
        with VideoWriter(str(final), 8):
            pass
    with pytest.raises(InputError, match="NaN"):
        write_video(str(final), torch.full((3, 2, 8, 8), float("nan")))
    assert final.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_paths_leaving_the_output_folder_are_refused(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(victim.parent, target_is_directory=True)
    for path in (out / ".." / "escape.mp4", out / "sub" / "escape.mp4"):
        with pytest.raises(InputError, match="outside the output folder"):
            check_output_path(str(path), "--output-dir", folder=str(out))
        with pytest.raises(InputError, match="outside the output folder"):
            write_video(str(path), clip(), folder=str(out))
    assert sorted(os.listdir(victim.parent)) == ["victim.txt"] and not (tmp_path / "escape.mp4").exists()
    check_output_path(str(out / "fine.mp4"), "--output-dir", folder=str(out))  # inside: accepted


def test_names_are_checked_with_their_temporary_name(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    fits = "a" * (limit - TEMPORARY_EXTRA_BYTES - 4) + ".mp4"
    check_output_path(str(tmp_path / fits), "output")
    write_video(str(tmp_path / fits), clip())  # the promise holds: what the check accepts is written
    too_long = "a" * (limit - TEMPORARY_EXTRA_BYTES - 3) + ".mp4"
    with pytest.raises(InputError, match=r"output: the output name .* temporary name .* limit of"):
        check_output_path(str(tmp_path / too_long), "output")
    (tmp_path / "taken.mp4").write_bytes(b"old")
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        check_output_path(str(tmp_path / "taken.mp4"), "output", overwrite=False, overwrite_flag="--overwrite")
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        check_output_path(str(tmp_path / "folder.mp4"), "output")


def test_concatenate_and_small_files_go_the_same_way(tmp_path, victim):
    segments = []
    for k in range(2):
        segments.append(str(tmp_path / f"s{k}.mp4"))
        with VideoWriter(segments[-1], 8, bframes=0) as writer:
            writer.write(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    plant_links(tmp_path, "joined.mp4", victim)
    assert concatenate(segments, str(tmp_path / "joined.mp4")) == 4
    plant_links(tmp_path, "state.json", victim)
    write_bytes(str(tmp_path / "state.json"), b"{}", sync=True)
    assert victim.read_bytes() == VICTIM_TEXT
    assert not (tmp_path / "joined.mp4").is_symlink() and (tmp_path / "state.json").read_bytes() == b"{}"


def test_the_enhance_work_folder_writes_through_no_link(tmp_path, victim):
    output = ResumableOutput(str(tmp_path / "out.mp4"), {"input": "x"})
    output.start(8)
    folder = tmp_path / "out.mp4.parts"
    for name in ("state.json.tmp", "overlap_00001.safetensors.tmp", "window_00000.partial.mp4"):
        os.symlink(victim, folder / name)
    os.unlink(folder / "state.json")
    os.symlink(victim, folder / "state.json")
    output.write(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    output.saved(Pending(1, torch.zeros(1, 8, 8, 3)))
    assert victim.read_bytes() == VICTIM_TEXT
    assert json.loads((folder / "state.json").read_text())["windows_done"] == 1


@pytest.mark.parametrize("damage", ["truncated", "nan", "shape", "link"])
def test_a_damaged_resume_overlap_is_refused_with_the_fix(tmp_path, victim, damage):
    from safetensors.torch import save_file

    output = ResumableOutput(str(tmp_path / "out.mp4"), {"input": "x"})
    output.start(8)
    output.write(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    output.saved(Pending(1, torch.zeros(1, 8, 8, 3)))
    overlap = tmp_path / "out.mp4.parts" / "overlap_00001.safetensors"
    if damage == "truncated":
        overlap.write_bytes(overlap.read_bytes()[:40])
    elif damage == "link":
        overlap.unlink()
        overlap.symlink_to(victim)
    else:
        save_file({"frames": torch.full((1, 8, 8, 3), float("nan")) if damage == "nan" else torch.zeros(8, 8, 3)},
                  str(overlap))
    with pytest.raises(InputError, match="--restart"):
        ResumableOutput(str(tmp_path / "out.mp4"), {"input": "x"}).start(8)


# ---- no module writes around output_file ------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("flashvideo_core", "nodes", "flashvideo_queue")
#: places that create files in other ways, each with why it is not an output
OTHER_WRITES_ALLOWED = {
    ("flashvideo_core/io/output_files.py", "write_bytes"): "the one writer itself",
    ("flashvideo_core/io/output_files.py", "output_file"): "the one writer itself",
    ("flashvideo_core/io/video.py", "__enter__"): "VideoWriter opens output_file's temporary name (entered by hand)",
    ("flashvideo_queue/manifest.py", "lock_folder"): "the run's lock file (O_NOFOLLOW, locked, never written)",
}


def _writes(tree):
    """(function name, line, what) of every call that creates or replaces a file, outside a ``with output_file``."""
    def is_output_file(item) -> bool:
        call = item.context_expr
        return isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", None)) == "output_file"

    def mode_of(call) -> str:
        modes = [k.value for k in call.keywords if k.arg == "mode"] + call.args[1:2]
        return modes[0].value if modes and isinstance(modes[0], ast.Constant) and isinstance(modes[0].value, str) else ""

    found = []

    def visit(node, function: str, guarded: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function, guarded = node.name, False
        if isinstance(node, ast.With) and any(is_output_file(item) for item in node.items):
            guarded = True
        if isinstance(node, ast.Call) and not guarded:
            func = node.func
            name = getattr(func, "attr", getattr(func, "id", ""))
            owner = getattr(getattr(func, "value", None), "id", "")
            what = None
            attribute = isinstance(func, ast.Attribute)
            if (name == "save" and owner == "torch" or name == "save_file"
                    or attribute and name in ("write_bytes", "write_text")):  # Path's; a bare write_bytes is ours
                what = name
            elif name in ("replace", "rename") and owner == "os" or name.startswith("copy") and owner == "shutil":
                what = f"{owner}.{name}"
            elif name == "open" and any(c in mode_of(node) for c in "wax"):
                what = f"{owner + '.' if owner else ''}open(mode {mode_of(node)!r})"
            elif name == "open" and owner == "os" and "O_CREAT" in ast.dump(node):
                what = "os.open(O_CREAT)"
            if what:
                found.append((function, node.lineno, what))
        for child in ast.iter_child_nodes(node):
            visit(child, function, guarded)

    visit(tree, "<module>", False)
    return found


def test_every_file_the_pack_writes_goes_through_output_file():
    stray = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            for function, line, what in _writes(ast.parse(path.read_text(), relative)):
                if (relative, function) not in OTHER_WRITES_ALLOWED:
                    stray.append(f"{relative}:{line} {function}: {what}")
    assert not stray, "write these through io.output_files.output_file (or allow them with a reason):\n" + \
        "\n".join(stray)


def test_make_tiny_replaces_planted_links_instead_of_writing_through_them(tmp_path, victim):
    from flashvideo_core.tiny_install import TINY_FILES, make_tiny

    models = tmp_path / "models"
    for relative in TINY_FILES:
        (models / relative).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(victim, models / relative)
    paths = make_tiny(str(models), force=True)
    assert victim.read_bytes() == VICTIM_TEXT
    assert all(os.path.isfile(p) and not os.path.islink(p) for p in paths.values())
