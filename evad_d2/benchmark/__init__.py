"""Speed, cost and memory benchmarks of EVAD (``tools/benchmark.py``, ``tools/benchmark_data.py``,
``tools/benchmark_ava_eval.py``).

Modules:
    timing     :class:`BenchmarkSettings`, the timer, interleaved repetitions, speed fields, ratios
    inference  the pruning ViT alone and the whole detector (end to end and model only)
    breakdown  the detector's time per part (ViT, neck, localization head, action head, rest)
    export     TorchScript and torch.export graphs against the eager model
    step       one training step on a synthetic batch
    training   step time and peak memory by keep rate
    memory     the fresh-process CPU memory probe (``python -m evad_d2.benchmark.memory``)
    loader     training data loader throughput
    analysis   parameters and GFLOPs per part (``tools/analyze_model.py``)
    ava_eval   the AVA frame-mAP evaluation at validation size (``tools/benchmark_ava_eval.py``)
    report     row fields, console table, JSON

Each benchmark returns one dict per keep rate (per worker count for the loader). The submodules
are imported by name (this package imports none of them, so that ``python -m
evad_d2.benchmark.memory`` runs its module once).
"""
