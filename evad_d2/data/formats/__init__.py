"""File formats of the datasets: readers and writers, independent of models and metrics.

* :mod:`.ava`: AVA CSVs: the row spec (``AvaRow``), the one validator and its policies
  (``ROW_POLICIES``: annotations, proposals, ground truth, detections), exclusions, frame lists,
  and the detection-row text spec and streaming writer (``DetectionCsvWriter``).
* :mod:`.label_map`: AVA label maps (pbtxt), both released forms.
* :mod:`.cvat`: CVAT's "CVAT for video 1.1" XML (tracks of boxes with actions): reader and writer.
* :mod:`.proposals`: person proposals per keyframe: CSVs (AVA, PySlowFast) and mmaction2's pickle.
* :mod:`.ucf_jhmdb`: the UCF101-24 / JHMDB ground-truth pickle.
"""
