"""Generated training data, one subpackage per kind, sharing what every generation job needs.

- ``text``: captions, rewrites and back translations (LLM-DA, MLLM4Text-ReID) and their filters;
- ``images``: generated person images and edited pairs (PDG, SynTBPR);
- here, shared by both: the job loop with shards and retries (``jobs``), store status and merging
  (``status``), and the chat and local LLM backends (``chat``, ``llm``).

The store format is ``tbpr.data.caption_store``: training reads it. Submodules load their heavy
dependencies (transformers, httpx, diffusers) only when imported.
"""
