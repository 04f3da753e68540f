"""Subject ids in NeRSemble / GaussianAvatars export folder names, and a subject's own FREE sequence.

Folder names carry the subject id:

- union folders: ``UNION<tag>_<id>_<rest>``, e.g. ``UNION10EMOEXP_306_eval_600_v16_DS4_whiteBg_
  staticOffset_maskBelowLine`` (NeRSemble) or ``UNION_s000_v16_DS5_whiteBg_staticOffset``
  (synthetic): the id is the token after the first ``_``;
- sequence folders: ``<id>_<SEQUENCE>_<rest>``, e.g. ``306_FREE_v16_DS4_whiteBg_staticOffset_
  maskBelowLine`` or ``s000_EXP-1_v16_DS5_whiteBg_staticOffset``: the id is the first token.

Several subjects' exports usually share one parent folder, so a subject's FREE (free-talking)
sequence is ``<parent>/<id>_FREE*`` with its own id, never another subject's. Used by render.sh::

    python -m utils.subject_ids free-sequence SUBJECT_OR_SEQUENCE_FOLDER

prints the absolute path of that subject's FREE sequence folder, or prints nothing on stdout and
one line on stderr saying that there is none and that its FREE self-reenactment is skipped (exit
status 0 either way; 2 for bad usage or a missing folder).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["subject_id", "own_free_sequence", "main"]

_ID_RE = re.compile(r"^[A-Za-z0-9]+$")


def subject_id(folder_name: str) -> str | None:
    """The subject id in a union or sequence folder name (see the module docstring), or
    ``None`` when the name does not follow that layout."""
    tokens = folder_name.split("_")
    if tokens[0].upper().startswith("UNION"):
        candidate = tokens[1] if len(tokens) > 1 else ""
    else:
        candidate = tokens[0] if len(tokens) > 1 else ""
    return candidate if _ID_RE.match(candidate) else None


def own_free_sequence(source: str | Path) -> tuple[Path | None, str]:
    """``(folder, message)``: the FREE sequence folder of the subject of ``source`` (a union or
    sequence folder), searched as ``<id>_FREE*`` among ``source``'s siblings, or ``(None, why)``.

    When several match, the one whose name ends like ``source``'s (same ``_v16_DS4_...``
    export settings) wins, then the first by name.
    """
    source = Path(source).resolve()
    sid = subject_id(source.name)
    if sid is None:
        return None, (f"no FREE sequence for {source}: its folder name carries no subject id "
                      "(expected UNION..._<id>_... or <id>_<SEQUENCE>_...)")
    prefix = f"{sid}_FREE"
    parent = source.parent
    found = sorted(p for p in parent.iterdir() if p.is_dir() and p.name.startswith(prefix))
    if not found:
        return None, f"no FREE sequence of subject {sid} in {parent} (no {prefix}* folder)"
    same_settings = [p for p in found if source.name.endswith(p.name[len(prefix):])]
    return (same_settings or found)[0], ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "free-sequence":
        print("usage: python -m utils.subject_ids free-sequence SUBJECT_OR_SEQUENCE_FOLDER",
              file=sys.stderr)
        return 2
    if not Path(argv[1]).is_dir():
        print(f"error: {argv[1]} is not a folder", file=sys.stderr)
        return 2
    folder, message = own_free_sequence(argv[1])
    if folder is None:
        print(f"{message}: its FREE self-reenactment is skipped", file=sys.stderr)
    else:
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
