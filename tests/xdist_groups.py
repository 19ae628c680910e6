"""Make ``pytest -n 2 --dist loadgroup`` honour ``xdist_group`` marks again (pytest-xdist#1386).

pytest-xdist's worker tells the scheduler a test's group by appending ``@<group>`` to its node id,
in its own ``pytest_collection_modifyitems``. It does so by assigning ``item._nodeid``, which pytest
9.2 no longer reads (node ids became structured :class:`_pytest.nodeid.NodeId` objects in
``item._id``). The marks are then silently ignored and ``loadgroup`` behaves like ``load``: the tests
of the ``lamin`` group (tests/lamin/conftest.py) ran on both workers, and each worker created its
own LaminDB instances, a PostgreSQL migration included (minutes on a loaded machine).

:func:`pytest_collection_modifyitems` (exposed to every test by ``tests/conftest.py``) runs last and
adds the suffix the way xdist means to, only on an xdist worker under ``--dist loadgroup``, and only
where the node id does not end with it already (so it does nothing once xdist's own hook works).

Example: ``tests/lamin/test_register.py::test_search[postgres]`` becomes
``tests/lamin/test_register.py::test_search[postgres]@lamin`` on the workers, which xdist's
``LoadGroupScheduling`` sends to one worker with the rest of the group.
"""

from __future__ import annotations

import pytest

__all__ = ["group_suffix", "pytest_collection_modifyitems"]


def group_suffix(item: pytest.Item) -> str:
    """``@<group>[_<group>...]`` for the item's ``xdist_group`` marks (xdist's spelling), or ``""``.

    Examples
    --------
    An item marked ``@pytest.mark.xdist_group("lamin")`` gives ``"@lamin"``; an unmarked one ``""``.
    """
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    return f"@{'_'.join(sorted(names))}" if names else ""


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # xdist sets option.loadgroup on its workers only (xdist.remote.setup_config)
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        suffix = group_suffix(item)
        if suffix and not item.nodeid.endswith(suffix):
            from _pytest.nodeid import NodeId  # pytest >= 9.2, the only versions that get here

            item._id = NodeId.parse(f"{item.nodeid}{suffix}")
