"""spora_sd.lamin.demo, the LaminDB step of `make demo`: a fresh local instance, twice."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def demo_dir(lamin, tmp_path_factory: pytest.TempPathFactory):
    """A folder for the demo's own instance (named spora-demo); the session's instance is reconnected after."""
    yield tmp_path_factory.mktemp("demo") / "lamin"
    lamin.connect()  # back to the session's instance


# the demo makes its own SQLite instance whatever the backend: run it once
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_demo_registers_searches_and_loads(demo_dir, synthetic_paths, caplog) -> None:
    from spora_sd.lamin import demo

    with caplog.at_level(logging.INFO, logger="spora_sd.lamin"):
        demo(synthetic_paths["tnbc"], demo_dir)
        # imported after demo(): connecting to another instance reloads lamindb's classes
        import lamindb as ln

        n_artifacts = ln.Artifact.filter(key__startswith="spora/").count()
        demo(synthetic_paths["tnbc"], demo_dir)  # the instance exists; nothing new is registered
    assert ln.setup.settings.instance.slug.endswith("/spora-demo")
    assert ln.Artifact.filter(key__startswith="spora/").count() == n_artifacts == 1
    assert "using the demo's labels" in caplog.text
    # in place: the cohort folder is the artifact
    assert (
        ln.Artifact.get(key="spora/tnbc2024synthetic").path.as_posix() == synthetic_paths["tnbc"].resolve().as_posix()
    )
    assert "search({'tissue': 'breast'}) -> spora/tnbc2024synthetic" in caplog.text
    assert "loaded spora/tnbc2024synthetic back" in caplog.text
    assert (demo_dir / ".lamindb").is_dir()
    assert not (demo_dir / ".lamin").exists()  # no dev-dir marker left behind


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_same_name_other_storage_is_an_error(demo_dir, tmp_path) -> None:
    from spora_sd.errors import SporaError
    from spora_sd.lamin import init_instance

    init_instance(demo_dir, name="spora-twice", ontologies=False)
    with pytest.raises(SporaError, match="already exists with storage"):
        init_instance(tmp_path / "elsewhere", name="spora-twice", ontologies=False)
