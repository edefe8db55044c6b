"""Generated captions: caption stores with provenance, chat and translation backends, generation jobs.

Submodules load their heavy dependencies (transformers, httpx) only when imported:
``store`` (the JSONL caption store), ``chat`` (OpenAI-compatible client), ``translate`` (back translation).
"""
