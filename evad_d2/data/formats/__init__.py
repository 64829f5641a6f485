"""File formats of the datasets: readers and writers, independent of models and metrics."""
