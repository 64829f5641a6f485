"""The part the dataset evaluators share: collect per-keyframe records, gather and de-duplicate
them, write the metrics files.

detectron2 runs an evaluator as ``reset()``, ``process(inputs, outputs)`` per batch (in every
process), then ``evaluate()``. :class:`KeyframeEvaluator` does the bookkeeping around the metric:

* :meth:`~KeyframeEvaluator.process` (the subclass) appends one record per input to
  ``self._frames``: a tuple whose first two items are the video id and the keyframe timestamp.
* :meth:`~KeyframeEvaluator.gathered_frames` brings every process's records to the main process
  (``distributed=True``), keeps the first record of each (video, timestamp) (an inference loader
  that pads its last batch predicts some keyframes twice) and warns about the rest.
* :meth:`~KeyframeEvaluator.write_metrics` writes ``<prefix>_metrics.json`` and the per-class AP
  chart ``<prefix>_per_class_ap.png`` to ``output_dir``.
"""
import json
import logging
import os
from typing import Dict, List, Optional

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from iopath.common.file_io import g_pathmgr

from evad_d2.utils.atomic_io import atomic_write

from .plots import plot_per_class_ap

__all__ = ["KeyframeEvaluator"]

logger = logging.getLogger(__name__)


class KeyframeEvaluator(DatasetEvaluator):
    """Base of :class:`~evad_d2.evaluation.ava.AVAEvaluator` and
    :class:`~evad_d2.evaluation.ucf_jhmdb.UCFJHMDBEvaluator` (see the module docstring).

    Subclasses implement ``process`` (appending records to ``self._frames``) and ``evaluate``
    (starting with :meth:`gathered_frames`).
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str], *, distributed: bool, protocol: str):
        """
        Args:
            dataset_name: the registered dataset evaluated.
            output_dir: where the metrics files go (nothing is written when None).
            distributed: gather the records of all processes to the main one.
            protocol: the metric protocol, already checked by the subclass.
        """
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._protocol = protocol
        self.reset()

    @property
    def protocol(self) -> str:
        """The metric protocol this evaluator follows (see the subclass's ``protocol`` argument)."""
        return self._protocol

    def reset(self):
        self._frames: List[tuple] = []

    def gathered_frames(self) -> Optional[List[tuple]]:
        """The records of every process, first of each (video, timestamp) kept, in process order.

        Returns:
            None in processes other than the main one (their ``evaluate`` returns ``{}``); an
            empty list, after a warning, when no keyframe was processed.
        """
        frames = self._frames
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._frames, dst=0)
            if not comm.is_main_process():
                return None
            frames = [f for part in gathered for f in part]
        if not frames:
            logger.warning("%s on '%s' received no predictions.", type(self).__name__, self._dataset_name)
            return []
        seen, unique = set(), []
        for f in frames:
            if (f[0], f[1]) not in seen:
                seen.add((f[0], f[1]))
                unique.append(f)
        if len(unique) < len(frames):
            logger.warning(
                "%d keyframes were predicted more than once; the first prediction is kept.", len(frames) - len(unique)
            )
        return unique

    def output_path(self, file_name: str) -> str:
        """``<output_dir>/<file_name>``, the folder created. Only with an ``output_dir``."""
        g_pathmgr.mkdirs(self._output_dir)
        return os.path.join(self._output_dir, file_name)

    def write_metrics(self, prefix: str, metrics: Dict, per_class_ap: Dict[str, float], title: str) -> None:
        """Write ``<prefix>_metrics.json`` (``metrics``, indented) and ``<prefix>_per_class_ap.png``
        (:func:`~evad_d2.evaluation.plots.plot_per_class_ap` of ``{class name: AP in percent}``)
        to ``output_dir``; nothing when it is None."""
        if not self._output_dir:
            return
        with atomic_write(self.output_path(f"{prefix}_metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        plot_per_class_ap(per_class_ap, self.output_path(f"{prefix}_per_class_ap.png"), title=title)
