"""The class API end to end: SDK -> control plane -> runtime node -> container process -> back."""

from __future__ import annotations

import asyncio

import pytest

import api_app
from api_app import Model
from conftest import Cluster


@pytest.fixture(scope="module")
def running(cluster: Cluster):
    with api_app.app.run():
        yield


def test_remote_returns_the_result_and_state_persists_in_the_container(running: None) -> None:
    model = Model(name="state")
    first = model.predict.remote(2)
    second = model.predict.remote(3)
    assert (first["y"], first["calls"]) == (2, 1)
    assert (second["y"], second["calls"]) == (3, 2)
    assert first["pid"] == second["pid"]


def test_parameters_are_typed_and_each_set_gets_its_own_container(running: None) -> None:
    a = Model(name="a", scale=10, flag=True, blob=b"\x00\x01").predict.remote(1)
    b = Model(name="b", scale=100).predict.remote(1)
    assert (a["name"], a["y"], a["flag"], a["blob"]) == ("a", 10, True, b"\x00\x01")
    assert (b["name"], b["y"], b["flag"], b["blob"]) == ("b", 100, False, b"")
    assert a["pid"] != b["pid"]
    assert a["calls"] == 1 and b["calls"] == 1


def test_remote_aio_and_async_methods(running: None) -> None:
    model = Model(name="aio", scale=3)

    async def main() -> list[object]:
        return await asyncio.gather(model.apredict.remote.aio(1), model.predict.remote.aio(2), model.apredict.remote.aio(3))

    a, b, c = asyncio.run(main())
    assert a == 3 and b["y"] == 6 and c == 9


def test_spawn_returns_a_handle_whose_get_waits_for_the_result(running: None) -> None:
    call = Model(name="spawn").predict.spawn(21)
    assert call.object_id.startswith("fc-")
    assert call.get(timeout=60)["y"] == 21


def test_map_returns_results_in_input_order(running: None) -> None:
    results = list(Model(name="map", scale=2).apredict.map(range(20)))
    assert results == [2 * i for i in range(20)]
    pairs = list(Model(name="map").echo.starmap([(1, 2), (3, 4)]))
    assert pairs == [((1, 2), {}), ((3, 4), {})]


def test_arguments_travel_by_value_with_kwargs(running: None) -> None:
    args, kwargs = Model(name="echo").echo.remote(1, "two", [3], key={"nested": (4, 5)})
    assert args == (1, "two", [3]) and kwargs == {"key": {"nested": (4, 5)}}


def test_code_runs_in_a_container_not_locally(running: None) -> None:
    assert Model(name="where").is_local.remote() is False
    assert Model(name="where").container_env.remote("CORRAL_CONTAINER_ID").startswith("ct-")


def test_local_runs_in_this_process(running: None) -> None:
    import os

    result = Model(name="local", scale=5).predict.local(2)
    assert result["y"] == 10 and result["pid"] == str(os.getpid())


def test_unknown_local_method_is_an_attribute_error(running: None) -> None:
    with pytest.raises(AttributeError, match="no @corral.method named 'nope'"):
        Model(name="x").nope


def test_a_package_module_ships_with_its_sibling_modules_and_real_tracebacks(cluster: Cluster) -> None:
    from shipped_pkg import service

    with service.app.run():
        shouter = service.Shouter()
        assert shouter.shout.remote("hi") == "HI!"
        module_file = shouter.module_file.remote()
        assert "/corral/bundle/" in module_file or "/bundles/" in module_file  # isolated, or a plain process
        with pytest.raises(ValueError, match="boom") as info:
            shouter.fail.remote("boom")
    remote = str(info.value.__cause__)
    assert 'helpers.py", line 9, in fail_here' in remote
    assert 'service.py", line' in remote


def test_a_script_run_as_main_ships_and_runs(cluster: Cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "standalone.py"
    script.write_text(
        "import corral\n"
        "app = corral.App('standalone')\n"
        "class Oops(Exception):\n"
        "    pass\n"
        "@app.cls()\n"
        "class Point:\n"
        "    @corral.method()\n"
        "    def make(self, x):\n"
        "        return {'x': x}\n"
        "    @corral.method()\n"
        "    def oops(self):\n"
        "        raise Oops('custom')\n"
        "if __name__ == '__main__':\n"
        "    with app.run():\n"
        "        print(Point().make.remote(7))\n"
        "        try:\n"
        "            Point().oops.remote()\n"
        "        except Oops as e:\n"
        "            print('caught', type(e).__name__, e)\n"
    )
    result = cluster.python(str(script), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "{'x': 7}" in result.stdout
    assert "caught Oops custom" in result.stdout
