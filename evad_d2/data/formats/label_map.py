"""AVA label maps (pbtxt), in both released forms, with errors that name the file and line."""
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from iopath.common.file_io import g_pathmgr

from .ava import TEXT_ENCODING, AvaFormatError

__all__ = ["LabelMapEntry", "read_label_map", "read_label_map_entries"]


@dataclass(frozen=True)
class LabelMapEntry:
    """One class of a label map: ``name``, its ``display_name`` (or None), ``label_type`` (AVA's
    ``PERSON_MOVEMENT`` / ``OBJECT_MANIPULATION`` / ``PERSON_INTERACTION``, or None), the block's
    kind (``"label"`` or ``"item"``) and the line the block starts on."""

    class_id: int
    name: str
    display_name: Optional[str]
    label_type: Optional[str]
    block: str
    line: int


# Tokens of the protobuf text format used by label maps: comments, strings, words, numbers, braces, colons.
_TOKEN_RE = re.compile(
    r'(?P<comment>#[^\n]*)|(?P<string>"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\')|(?P<open>\{)|(?P<close>\})'
    r'|(?P<colon>:)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<number>[-+]?\d+)|(?P<space>\s+)|(?P<bad>.)'
)
_ESCAPE_RE = re.compile(r"\\(.)")
_BLOCKS = ("label", "item")
# Field -> kind of value. "id" (ActivityNet lists, TF label maps) and "label_id" (AVA's own lists) are the same field.
_FIELDS = {"name": "string", "display_name": "string", "id": "number", "label_id": "number", "label_type": "word"}


def _label_map_tokens(path: str, text: str) -> List[Tuple[str, str, int]]:
    tokens, line = [], 1
    for m in _TOKEN_RE.finditer(text):
        kind, value = m.lastgroup, m.group()
        if kind == "bad":
            hint = " (a string not closed on its line?)" if value in "\"'" else ""
            raise AvaFormatError(path, line, f"unexpected character {value!r}{hint}")
        if kind not in ("comment", "space"):
            tokens.append((kind, value, line))
        line += value.count("\n")
    return tokens


def read_label_map_entries(path: str) -> List[LabelMapEntry]:
    """Parse a pbtxt label map in either released form, in file order.

    * AVA's action lists (``ava_action_list_v2.1.pbtxt``, ``ava_action_list_v2.2.pbtxt``, 80
      classes): ``label { name: "..." label_id: N label_type: PERSON_MOVEMENT }``.
    * the ActivityNet evaluation lists (``..._for_activitynet_2018/2019.pbtxt``, 60 classes) and
      TF-style maps: ``item { name: "..." id: N [display_name: "..."] }``.

    ``#`` comments and any layout (one block per line or one field per line) are allowed.

    Raises:
        AvaFormatError: naming the file and line, for a block that is not closed, a field outside
            a block, an unknown block or field, a block with two ids (or two names), a block
            without a name or an id, an id that is not an integer, a duplicate id, or no blocks.
    """
    with g_pathmgr.open(path, "r", encoding=TEXT_ENCODING) as f:
        text = f.read()
    tokens = _label_map_tokens(path, text)
    entries: List[LabelMapEntry] = []
    first_line: Dict[int, int] = {}
    i = 0
    while i < len(tokens):
        block, block_line, i = _block_start(path, tokens, i)
        fields, i = _block_fields(path, tokens, i, block, block_line)
        if "name" not in fields:
            raise AvaFormatError(path, block_line, f"'{block}' block has no 'name'")
        if "id" not in fields:
            id_field = "label_id" if block == "label" else "id"
            raise AvaFormatError(path, block_line, f"'{block}' block {fields['name'][0]!r} has no '{id_field}'")
        class_id = int(fields["id"][0])
        if class_id in first_line:
            raise AvaFormatError(path, fields["id"][1], f"duplicate class id {class_id} (also on line {first_line[class_id]})")
        first_line[class_id] = fields["id"][1]
        entries.append(LabelMapEntry(
            class_id, fields["name"][0], fields.get("display_name", (None,))[0], fields.get("label_type", (None,))[0],
            block, block_line,
        ))
    if not entries:
        raise AvaFormatError(path, None, "no 'label { name: ... label_id: ... }' or 'item { name: ... id: ... }' blocks found")
    return entries


def _block_start(path: str, tokens: List[Tuple[str, str, int]], i: int) -> Tuple[str, int, int]:
    """The block opened at ``tokens[i]`` (``label {``, ``item {`` or ``item: {``): its kind, its
    line and the index after its ``{``."""
    kind, value, line = tokens[i]
    if kind != "word" or value not in _BLOCKS:
        if kind == "word" and value in _FIELDS:
            raise AvaFormatError(path, line, f"field '{value}' outside a 'label {{ ... }}' or 'item {{ ... }}' block")
        raise AvaFormatError(path, line, f"expected a 'label {{' or 'item {{' block, found {value!r}")
    i += 1
    if i < len(tokens) and tokens[i][0] == "colon":  # "item: { ... }" is valid text format too
        i += 1
    if i >= len(tokens) or tokens[i][0] != "open":
        raise AvaFormatError(path, line, f"'{value}' must be followed by '{{'")
    return value, line, i + 1


def _block_fields(
    path: str, tokens: List[Tuple[str, str, int]], i: int, block: str, block_line: int
) -> Tuple[Dict[str, Tuple[str, int]], int]:
    """The fields of the block whose contents start at ``tokens[i]``, as ``{key: (value, line)}``
    (``id`` and ``label_id`` both under ``"id"``), and the index after its ``}``."""
    fields: Dict[str, Tuple[str, int]] = {}
    while True:
        if i >= len(tokens):
            raise AvaFormatError(path, block_line, f"'{block} {{' opened here is not closed (end of file reached)")
        kind, value, line = tokens[i]
        if kind == "close":
            return fields, i + 1
        if kind == "word" and value in _BLOCKS and i + 1 < len(tokens) and tokens[i + 1][0] in ("open", "colon"):
            raise AvaFormatError(
                path, block_line, f"'{block} {{' opened here is not closed before the '{value} {{' of line {line}"
            )
        if kind != "word":
            raise AvaFormatError(path, line, f"expected a field name inside '{block} {{ ... }}', found {value!r}")
        if value not in _FIELDS:
            raise AvaFormatError(path, line, f"unknown field '{value}' in '{block} {{ ... }}' (known: {', '.join(_FIELDS)})")
        field = value
        if i + 2 >= len(tokens) or tokens[i + 1][0] != "colon":
            raise AvaFormatError(path, line, f"field '{field}' needs ': value'")
        vkind, raw, vline = tokens[i + 2]
        if vkind != _FIELDS[field]:
            what = {"string": "a quoted string", "number": "an integer", "word": "a bare word"}[_FIELDS[field]]
            raise AvaFormatError(path, vline, f"field '{field}' must be {what}, got {raw!r}")
        key = "id" if field in ("id", "label_id") else field
        if key in fields:
            raise AvaFormatError(
                path, line, f"'{block}' block of line {block_line} has a second {'id' if key == 'id' else repr(field)} "
                f"(first on line {fields[key][1]})"
            )
        fields[key] = (_ESCAPE_RE.sub(r"\1", raw[1:-1]) if vkind == "string" else raw, line)
        i += 3


def read_label_map(path: str) -> Dict[int, str]:
    """``{class_id: name}`` of a label map in file order (either released form; see
    ``read_label_map_entries``). A block's ``display_name``, where present, is its name.

    Raises:
        AvaFormatError: a malformed label map, naming the file and line.
    """
    return {e.class_id: e.display_name or e.name for e in read_label_map_entries(path)}
