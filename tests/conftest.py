import pytest


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory):
    """A SynthPedes 'tiny' dataset folder (CUHK-PEDES layout), generated once per test session."""
    from tbpr.data.synthpedes import generate

    out = tmp_path_factory.mktemp("synthpedes") / "tiny"
    generate(out, size="tiny", seed=0)
    return out
