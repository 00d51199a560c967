"""Data sources and client partitioning."""

from fedhello.data import domain_partition, paper  # noqa: F401  (register the paper's data sets and splits)
from fedhello.data.partition import PARTITIONERS, build_partitioner
from fedhello.data.sources import LABEL_COUNTS, SOURCES, check_path, class_names, count_labels, load_source

__all__ = [
    "LABEL_COUNTS",
    "PARTITIONERS",
    "SOURCES",
    "build_partitioner",
    "check_path",
    "class_names",
    "count_labels",
    "load_source",
]
