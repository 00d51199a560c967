"""Data sources and client partitioning."""

from fedhello.data import domain_partition, paper  # noqa: F401  (register the paper's data sets and splits)
from fedhello.data.partition import PARTITIONERS, build_partitioner
from fedhello.data.sources import SOURCES, load_source

__all__ = ["PARTITIONERS", "SOURCES", "build_partitioner", "load_source"]
