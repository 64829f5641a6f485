"""CVAT's "CVAT for video 1.1" XML export: person tracks with their actions, frame by frame.

The format (https://docs.cvat.ai, "XML annotation format", interpolation / video tasks)::

    <annotations>
      <version>1.1</version>
      <meta>
        <task>  (or <job>; a project export has <project> with <tasks>)
          <name>...</name> <size>N</size> <start_frame>0</start_frame> <stop_frame>N-1</stop_frame>
          <labels><label><name>person</name>
            <attributes><attribute><name>action</name><input_type>select</input_type>
              <values>walk\\nrun</values></attribute></attributes></label></labels>
          <original_size><width>W</width><height>H</height></original_size>
        </task>
      </meta>
      <track id="0" label="person" source="manual">
        <box frame="0" xtl="..." ytl="..." xbr="..." ybr="..." outside="0" occluded="0" keyframe="1">
          <attribute name="action">walk</attribute>
        </box> ...
      </track>
    </annotations>

Frame numbers are the video's own frame numbers (CVAT writes absolute frame ids), boxes are
pixels of the original size. CVAT writes every frame of a track, but between two listed boxes a
track is linearly interpolated (as CVAT does between keyframes) and its attributes are the
earlier box's; a box with ``outside="1"`` ends the track until its next box, and after its last
box a track goes on to the end of the video.

Actions come from (``ActionSource``):

* ``"attribute"``: one attribute (default ``action``, a select/radio/text) whose value names the
  class; its ``<values>`` list is the class list;
* ``"label"``: the track's label is the class (every label a class);
* ``"checkboxes"``: every checkbox attribute set to true names a class (several at once).
"""
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ...utils.atomic_io import atomic_write
from .errors import FileFormatError

__all__ = [
    "ACTION_SOURCES",
    "CvatBox",
    "CvatFormatError",
    "CvatTrack",
    "CvatVideo",
    "NO_ACTION_VALUES",
    "box_at",
    "class_names",
    "read_cvat_video",
    "box_actions",
    "write_cvat_video",
]

ACTION_SOURCES = ("attribute", "label", "checkboxes")
# Attribute values meaning "no action" (CVAT's placeholder for an unset select is __undefined__).
NO_ACTION_VALUES = frozenset(["", "none", "__undefined__"])
_TRUE = frozenset(["true", "1", "yes"])


class CvatFormatError(FileFormatError):
    """A CVAT XML file that cannot be read as a video export; the message names the file (and
    the line, where the XML parser knows it)."""

    def __init__(self, path: str, message: str, line: Optional[int] = None):
        super().__init__(path, line, message)


@dataclass(frozen=True)
class CvatBox:
    """One ``<box>`` of a track: pixels ``(xtl, ytl, xbr, ybr)`` of the original size."""

    frame: int
    box: Tuple[float, float, float, float]
    outside: bool
    occluded: bool
    keyframe: bool
    attributes: Dict[str, str]


@dataclass
class CvatTrack:
    """A ``<track>``: its id, label and boxes sorted by frame."""

    track_id: int
    label: str
    boxes: List[CvatBox]


@dataclass
class CvatVideo:
    """A parsed export: ``labels`` maps each label to its attributes (name -> (input type,
    values)); ``num_frames`` is the task's last frame + 1 when the meta says (else None)."""

    path: str
    name: str
    width: int
    height: int
    labels: Dict[str, Dict[str, Tuple[str, List[str]]]]
    tracks: List[CvatTrack]
    num_frames: Optional[int] = None
    version: str = ""
    attribute_order: List[str] = field(default_factory=list)


def _int(path: str, element: ET.Element, key: str) -> int:
    text = element.get(key)
    try:
        return int(text)
    except (TypeError, ValueError):
        raise CvatFormatError(path, f"<{element.tag}> attribute {key}={text!r} is not an integer") from None


def _float(path: str, element: ET.Element, key: str) -> float:
    text = element.get(key)
    try:
        return float(text)
    except (TypeError, ValueError):
        raise CvatFormatError(path, f"<{element.tag}> attribute {key}={text!r} is not a number") from None


def _text_int(path: str, parent: Optional[ET.Element], tag: str) -> Optional[int]:
    child = None if parent is None else parent.find(tag)
    if child is None or not (child.text or "").strip():
        return None
    try:
        return int(child.text.strip())
    except ValueError:
        raise CvatFormatError(path, f"<{tag}> {child.text.strip()!r} is not an integer") from None


def _meta_labels(meta: ET.Element) -> Tuple[Dict[str, Dict[str, Tuple[str, List[str]]]], List[str]]:
    """Labels -> {attribute name: (input_type, values)}, and the attribute names in file order."""
    labels: Dict[str, Dict[str, Tuple[str, List[str]]]] = {}
    order: List[str] = []
    for label in meta.iter("label"):
        name = (label.findtext("name") or "").strip()
        if not name or name in labels:
            continue
        attrs = {}
        for attr in label.iter("attribute"):
            attr_name = (attr.findtext("name") or "").strip()
            values = [v.strip() for v in (attr.findtext("values") or "").split("\n") if v.strip()]
            attrs[attr_name] = ((attr.findtext("input_type") or "").strip(), values)
            if attr_name not in order:
                order.append(attr_name)
        labels[name] = attrs
    return labels, order


def _track(path: str, element: ET.Element) -> CvatTrack:
    boxes = []
    for b in element.findall("box"):
        box = tuple(_float(path, b, k) for k in ("xtl", "ytl", "xbr", "ybr"))
        attributes = {a.get("name", ""): (a.text or "").strip() for a in b.findall("attribute")}
        boxes.append(CvatBox(_int(path, b, "frame"), box, b.get("outside") == "1", b.get("occluded") == "1",
                             b.get("keyframe", "1") == "1", attributes))
    boxes.sort(key=lambda b: b.frame)
    frames = [b.frame for b in boxes]
    if len(set(frames)) != len(frames):
        raise CvatFormatError(path, f"track {element.get('id')} has two boxes on one frame")
    return CvatTrack(_int(path, element, "id"), element.get("label", ""), boxes)


def read_cvat_video(path: str) -> CvatVideo:
    """Parse a "CVAT for video 1.1" XML file (see the module docstring).

    Raises:
        CvatFormatError: not XML, not an ``<annotations>`` export, a "CVAT for images" export
            (``<image>`` elements), no frame size in the meta, or a malformed track or box.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise CvatFormatError(path, f"not well-formed XML: {e}", e.position[0]) from None
    if root.tag != "annotations":
        raise CvatFormatError(path, f"the root element is <{root.tag}>, expected <annotations> (a CVAT XML export)")
    if root.find("image") is not None:
        raise CvatFormatError(path, "this is a 'CVAT for images' export (<image> elements); export the task as 'CVAT for video 1.1'")
    meta = root.find("meta")
    if meta is None:
        raise CvatFormatError(path, "no <meta> element")
    size = meta.find(".//original_size")
    width, height = _text_int(path, size, "width"), _text_int(path, size, "height")
    if not width or not height:
        raise CvatFormatError(path, "no <original_size><width>/<height> in <meta>: the boxes cannot be normalised")
    if len(meta.findall("./project/tasks/task")) > 1:
        raise CvatFormatError(path, "a project export with several tasks: export each video task on its own (one XML per video)")
    task = next((meta.find(t) for t in ("task", "job", "project") if meta.find(t) is not None), meta)
    stop = _text_int(path, task, "stop_frame")
    count = _text_int(path, task, "size")
    num_frames = stop + 1 if stop is not None else count
    labels, order = _meta_labels(meta)
    if root.find("track/polygon") is not None and root.find("track/box") is None:
        raise CvatFormatError(path, "the tracks have no <box> shapes (only rectangles are read)")
    tracks = [_track(path, t) for t in root.findall("track")]
    return CvatVideo(path, (task.findtext("name") or "").strip(), width, height, labels, tracks, num_frames,
                     (root.findtext("version") or "").strip(), order)


def box_at(track: CvatTrack, frame: int) -> Optional[CvatBox]:
    """The track's box on ``frame``: listed, linearly interpolated between its neighbours (the
    earlier one's attributes), or None where the track is outside or has not started."""
    before = None
    for b in track.boxes:
        if b.frame > frame:
            after = b
            break
        before = b
    else:
        after = None
    if before is None or before.outside:
        return None
    if before.frame == frame or after is None or after.outside:
        return before if before.frame == frame else CvatBox(frame, before.box, False, before.occluded, False, before.attributes)
    w = (frame - before.frame) / (after.frame - before.frame)
    box = tuple(a + w * (b - a) for a, b in zip(before.box, after.box))
    return CvatBox(frame, box, False, before.occluded, False, before.attributes)


def class_names(video: CvatVideo, source: str = "attribute", attribute: str = "action",
                person_labels: Optional[Sequence[str]] = None) -> List[str]:
    """The action classes the meta declares, in file order.

    Raises:
        CvatFormatError: an unknown ``source``, or (``"attribute"``) no label with that attribute.
    """
    if source not in ACTION_SOURCES:
        raise CvatFormatError(video.path, f"action source {source!r} is not one of {ACTION_SOURCES}")
    labels = {k: v for k, v in video.labels.items() if not person_labels or k in person_labels}
    names: List[str] = []
    if source == "label":
        names = list(labels)
    for attrs in labels.values():
        if source == "attribute" and attribute in attrs:
            names += [v for v in attrs[attribute][1] if v.lower() not in NO_ACTION_VALUES]
        if source == "checkboxes":
            names += [a for a in video.attribute_order if a in attrs and attrs[a][0] == "checkbox"]
    if source == "attribute" and not any(attribute in attrs for attrs in labels.values()):
        declared = sorted({a for attrs in labels.values() for a in attrs})
        raise CvatFormatError(
            video.path, f"no label declares the action attribute {attribute!r} (attributes: {declared}); "
            "name it with --action-attribute, or use --actions label / checkboxes"
        )
    return list(dict.fromkeys(names))


def box_actions(track: CvatTrack, box: CvatBox, source: str = "attribute", attribute: str = "action") -> List[str]:
    """The action names of one (possibly interpolated) box."""
    if source == "label":
        return [track.label]
    if source == "checkboxes":
        return [name for name, value in box.attributes.items() if value.lower() in _TRUE]
    value = box.attributes.get(attribute, "")
    return [] if value.lower() in NO_ACTION_VALUES else [value]


def _sub(parent: ET.Element, tag: str, text: Optional[str] = None, **attrib) -> ET.Element:
    child = ET.SubElement(parent, tag, {k: str(v) for k, v in attrib.items()})
    if text is not None:
        child.text = text
    return child


def write_cvat_video(path: str, video: CvatVideo) -> None:
    """Write ``video`` as a "CVAT for video 1.1" XML file, as CVAT exports a video task: task meta
    (frames 0..num_frames-1, labels with their attributes, original size) and one ``<track>`` per
    track with its boxes (pixels, two decimals) and per-box attributes. Atomic."""
    root = ET.Element("annotations")
    _sub(root, "version", "1.1")
    meta = _sub(root, "meta")
    task = _sub(meta, "task")
    n = video.num_frames or 1 + max((b.frame for t in video.tracks for b in t.boxes), default=0)
    for tag, text in (("id", "1"), ("name", video.name), ("size", str(n)), ("mode", "interpolation"), ("overlap", "0"),
                      ("bugtracker", ""), ("subset", "default"), ("start_frame", "0"), ("stop_frame", str(n - 1)),
                      ("frame_filter", "")):
        _sub(task, tag, text)
    labels = _sub(task, "labels")
    for label, attrs in video.labels.items():
        el = _sub(labels, "label")
        _sub(el, "name", label)
        _sub(el, "type", "rectangle")
        attributes = _sub(el, "attributes")
        for attr_name, (input_type, values) in attrs.items():
            a = _sub(attributes, "attribute")
            for tag, text in (("name", attr_name), ("mutable", "True"), ("input_type", input_type),
                              ("default_value", values[0] if values else ""), ("values", "\n".join(values))):
                _sub(a, tag, text)
    size = _sub(task, "original_size")
    _sub(size, "width", str(video.width))
    _sub(size, "height", str(video.height))
    for track in video.tracks:
        t = _sub(root, "track", id=track.track_id, label=track.label, source="manual")
        for b in track.boxes:
            coords = {k: f"{v:.2f}" for k, v in zip(("xtl", "ytl", "xbr", "ybr"), b.box)}
            box = _sub(t, "box", frame=b.frame, keyframe=int(b.keyframe), outside=int(b.outside),
                       occluded=int(b.occluded), **coords, z_order=0)
            for attr_name, value in b.attributes.items():
                _sub(box, "attribute", value, name=attr_name)
    ET.indent(root)
    with atomic_write(path, "wb") as f:
        ET.ElementTree(root).write(f, encoding="utf-8", xml_declaration=True)
