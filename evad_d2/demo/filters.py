"""What the demo shows: label names from a file, a subset of classes, an action-score threshold.

* :func:`read_label_names`: class names (and ids) from a pbtxt label map, a JSON list, or a text
  file with one name per line;
* :class:`ActionFilter`: the actions kept per actor (only the chosen classes, at least the
  threshold, the top-k of them); an actor left with no action is not shown.
"""
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.formats.label_map import read_label_map

__all__ = ["ActionFilter", "LabelFileError", "read_label_names", "resolve_classes"]


class LabelFileError(ValueError):
    """A label file that cannot be used; the message names the file and what is wrong."""


def _json_labels(path: str) -> Tuple[Optional[List[int]], List[str]]:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise LabelFileError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict) and "classes" in data:  # the demo's own JSON header
        data = data["classes"]
    if not isinstance(data, list) or not data:
        raise LabelFileError(f"{path}: expected a non-empty JSON list of names (or of {{\"id\", \"name\"}} objects)")
    if all(isinstance(x, str) for x in data):
        return None, list(data)
    if all(isinstance(x, dict) and isinstance(x.get("id"), int) and isinstance(x.get("name"), str) for x in data):
        return [x["id"] for x in data], [x["name"] for x in data]
    raise LabelFileError(f"{path}: a JSON label list holds only names (strings) or only {{\"id\": int, \"name\": str}} objects")


def read_label_names(path: str) -> Tuple[Optional[List[int]], List[str]]:
    """Class names, in model column order, from a label file chosen by its extension.

    * ``.pbtxt``: an AVA/TF label map: ids and names, sorted by id;
    * ``.json``: a list of names, a list of ``{"id", "name"}`` objects, or the demo's JSON output
      (its ``"classes"``);
    * anything else: text, one name per line (blank lines skipped).

    Returns:
        ``(ids or None, names)``: ids only where the file has them.

    Raises:
        LabelFileError / AvaFormatError: naming the file: missing, malformed, or empty.
    """
    if not os.path.isfile(path):
        raise LabelFileError(f"{path}: label file not found")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".pbtxt":
        label_map = read_label_map(path)
        ids = sorted(label_map)
        return ids, [label_map[i] for i in ids]
    if ext == ".json":
        return _json_labels(path)
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise LabelFileError(f"{path}: no class names (expected one name per line)")
    return None, names


def resolve_classes(tokens: Sequence, class_names: Sequence[str], action_ids: Sequence[int]) -> List[int]:
    """Model columns of the classes named by ``tokens``: each a label-map id (an integer) or a
    class name (case-insensitive).

    Raises:
        ValueError: a token that is neither (the message lists some known names).
    """
    by_name = {n.lower(): c for c, n in enumerate(class_names)}
    by_id = {int(i): c for c, i in enumerate(action_ids)}
    columns = []
    for token in tokens:
        text = str(token).strip()
        if text.lstrip("-").isdigit() and int(text) in by_id:
            columns.append(by_id[int(text)])
        elif text.lower() in by_name:
            columns.append(by_name[text.lower()])
        else:
            known = ", ".join(f"{i}: {n}" for i, n in list(zip(action_ids, class_names))[:8])
            more = ", ..." if len(class_names) > 8 else ""
            raise ValueError(f"--classes: unknown class {text!r} (neither an id nor a name; known: {known}{more})")
    return sorted(set(columns))


class ActionFilter:
    """The actions shown per actor: only ``classes`` (model columns; None: all), only scores >=
    ``score_threshold`` (None: any), the ``top_k`` best of them. With neither filter set actors
    pass unchanged (the predictor's top-k).

    Args:
        class_names, action_ids: per model column (the predictor's).
        top_k: actions kept per actor.
        score_threshold: lowest action score shown.
        classes: model columns to show (see :func:`resolve_classes`).
    """

    def __init__(self, class_names: Sequence[str], action_ids: Sequence[int], *, top_k: int = 3,
                 score_threshold: Optional[float] = None, classes: Optional[Sequence[int]] = None):
        if score_threshold is not None and not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"--score-threshold must be in [0, 1], got {score_threshold}")
        self.class_names, self.action_ids = list(class_names), list(action_ids)
        self.top_k, self.score_threshold = top_k, score_threshold
        self.columns = None if classes is None else np.asarray(sorted(classes), dtype=np.int64)

    @property
    def active(self) -> bool:
        """Whether anything is filtered."""
        return self.score_threshold is not None or self.columns is not None

    def __call__(self, actors: List[Dict]) -> List[Dict]:
        """Copies of the actors with ``actions``/``action_ids`` re-chosen; actors with no action
        left are dropped. ``action_scores`` (all classes) is kept as it was."""
        if not self.active:
            return actors
        shown = []
        for actor in actors:
            scores = np.asarray(actor["action_scores"], dtype=np.float64)
            columns = np.arange(len(scores)) if self.columns is None else self.columns
            if self.score_threshold is not None:
                columns = columns[scores[columns] >= self.score_threshold]
            top = columns[np.argsort(-scores[columns], kind="stable")][: self.top_k]
            if len(top) == 0:
                continue
            shown.append({
                **actor,
                "actions": [(self.class_names[c], float(scores[c])) for c in top],
                "action_ids": [int(self.action_ids[c]) for c in top],
            })
        return shown
