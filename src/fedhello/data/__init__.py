"""Data sources and client partitioning."""

from fedhello.data.partition import PARTITIONERS, build_partitioner
from fedhello.data.sources import SOURCES, load_source

__all__ = ["PARTITIONERS", "SOURCES", "build_partitioner", "load_source"]
