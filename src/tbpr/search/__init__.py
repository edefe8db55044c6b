"""Search an image folder by text: build and update an index, query it (CLI, HTTP service)."""

from tbpr.search.index import build_index, update_index
from tbpr.search.searcher import Searcher, SearchResult

__all__ = ["SearchResult", "Searcher", "build_index", "update_index"]
