"""tbpr: text-based person retrieval.

``tbpr.load(run_dir)`` returns a ``tbpr.Retriever`` that encodes texts and images (see ``tbpr.api``);
both are imported on first use, so ``import tbpr`` (and the CLI's argument parsing) stays light.
"""

__version__ = "0.1.0"
__all__ = ["Retriever", "load"]


def __getattr__(name: str):
    if name in __all__:
        from tbpr import api

        return getattr(api, name)
    raise AttributeError(f"module 'tbpr' has no attribute {name!r}")
