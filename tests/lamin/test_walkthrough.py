"""spora_sd.lamin.demo, the LaminDB step of `make demo`: a fresh local instance, twice."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def demo_dir(lamin, tmp_path_factory: pytest.TempPathFactory):
    yield tmp_path_factory.mktemp("demo") / "lamin"
    lamin.connect()  # back to the session's instance


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
    assert "search({'tissue': 'breast'}) -> spora/tnbc2024synthetic.zarr" in caplog.text
    assert "loaded spora/tnbc2024synthetic.zarr back" in caplog.text
    assert (demo_dir / ".lamindb").is_dir()
    assert not (demo_dir / ".lamin").exists()  # no dev-dir marker left behind
