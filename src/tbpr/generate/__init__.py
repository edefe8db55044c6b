"""Generated captions: chat and translation backends and the generation jobs that fill caption stores
(the store format itself is ``tbpr.data.caption_store``: training reads it).

Submodules load their heavy dependencies (transformers, httpx) only when imported:
``chat`` (OpenAI-compatible client), ``translate`` (back translation).
"""
