"""AVA label maps (evad_d2/data/formats/label_map.py): both released forms, malformed files named by line."""
import pytest

from evad_d2.data.formats.ava import AvaFormatError
from evad_d2.data.formats.label_map import read_label_map, read_label_map_entries

from evad_d2.testing import write_text

# The first lines of AVA's own action list, as released (ava_action_list_v2.2.pbtxt, 80 classes;
# v2.1's has the same form), with a comment and blank lines added.
AVA_ACTION_LIST = """# AVA v2.2 action list
label {
  name: "bend/bow (at the waist)"
  label_id: 1
  label_type: PERSON_MOVEMENT
}

label {
  name: "crawl"
  label_id: 2
  label_type: PERSON_MOVEMENT
}
label {
  name: "answer phone"
  label_id: 80
  label_type: OBJECT_MANIPULATION
}
"""
# The ActivityNet evaluation list (ava_action_list_v2.2_for_activitynet_2019.pbtxt, 60 classes).
ACTIVITYNET_LIST = """item {
  name: "bend/bow (at the waist)"
  id: 1
}

# evaluated subset
item {
  name: "answer phone"
  id: 80
}
"""


def test_label_maps_in_both_released_forms(tmp_path):
    ava = read_label_map_entries(write_text(tmp_path / "ava_action_list_v2.2.pbtxt", AVA_ACTION_LIST))
    assert [(e.class_id, e.name, e.label_type, e.block, e.line) for e in ava] == [
        (1, "bend/bow (at the waist)", "PERSON_MOVEMENT", "label", 2),
        (2, "crawl", "PERSON_MOVEMENT", "label", 8),
        (80, "answer phone", "OBJECT_MANIPULATION", "label", 13),
    ]
    anet = write_text(tmp_path / "anet.pbtxt", ACTIVITYNET_LIST)
    assert read_label_map(anet) == {1: "bend/bow (at the waist)", 80: "answer phone"}
    # One block per line, no spaces, display_name (TF label maps), escaped quotes.
    compact = write_text(tmp_path / "c.pbtxt", 'item{name:"a" id:3 display_name:"Alpha"} item { name: "say \\"hi\\"" id: 4 }')
    assert read_label_map(compact) == {3: "Alpha", 4: 'say "hi"'}


@pytest.mark.parametrize(
    "text, line, message",
    [
        # An unclosed block used to merge the next class into it silently.
        ('item {\n  name: "a"\n  id: 1\nitem {\n  name: "b"\n  id: 2\n}\n', 1,
         r"'item \{' opened here is not closed before the 'item \{' of line 4"),
        ('label {\n  name: "a"\n  label_id: 1\n', 1, r"'label \{' opened here is not closed \(end of file"),
        ('item {\n  name: "a"\n  id: 1\n  id: 2\n}\n', 4, "'item' block of line 1 has a second id"),
        ('label {\n  name: "a"\n  label_id: 1\n  id: 2\n}\n', 4, "second id"),
        ('item {\n  name: "a"\n  name: "b"\n  id: 2\n}\n', 3, "has a second 'name'"),
        ('label {\n  name: "a"\n  label_type: PERSON_MOVEMENT\n}\n', 1, "'label' block 'a' has no 'label_id'"),
        ('item {\n  id: 1\n}\n', 1, "'item' block has no 'name'"),
        ('item { name: "a" id: 1 }\n\nitem { name: "b" id: 1 }\n', 3, r"duplicate class id 1 \(also on line 1\)"),
        ('item {\n  name: "a"\n  id: 1\n  colour: "red"\n}\n', 4, "unknown field 'colour'"),
        ('item {\n  name: "a"\n  id: one\n}\n', 3, "field 'id' must be an integer, got 'one'"),
        ('name: "a"\nid: 1\n', 1, "field 'name' outside a 'label"),
        ('item {\n  name: "a\n  id: 1\n}\n', 2, "a string not closed on its line"),
        ('# only a comment\n\n', None, "no 'label { name: ... label_id: ... }' or 'item { name: ... id: ... }' blocks"),
    ],
)
def test_malformed_label_maps_name_file_and_line(tmp_path, text, line, message):
    path = write_text(tmp_path / "bad.pbtxt", text)
    with pytest.raises(AvaFormatError, match=message) as e:
        read_label_map(path)
    assert str(e.value).startswith(f"{path}:{line}: " if line is not None else f"{path}: ")
