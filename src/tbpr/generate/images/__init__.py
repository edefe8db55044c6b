"""Image generation: synthetic persons and their edits (SynTBPR), controlled text-image pairs (PDG).

- ``backend``: the ``ImageGenerator`` protocol, its requests and results, and ``make_backend``;
- ``renderer``: the SynthPedes procedural renderer as a backend (no weights; ground truth known);
- ``job``: the image job on the shared job loop (``tbpr.generate.jobs``): shards, retries, resume;
- ``store``: image records in the shared generation store and the image files beside it;
- ``filters``: person filters (does an image hold one whole person?);
- ``diffusion``: Stable Diffusion-family sampling, inversion, prompt-to-prompt, editing and fine-tuning on
  diffusers, and the ``diffusers`` backend.
"""
