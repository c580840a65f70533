"""Every example of the seed document runs as written, with `corral` for `modal` (issue 14, item 1).

The examples live in tests/apps/seed_app.py and seed_temperature_app.py. The cluster's node
declares simulated A100s, since several examples ask for `gpu="A100"`. `GPUModel` is deployed but
never called: its image installs torch from PyPI, and this machine has no network.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

import corral as modal
import seed_app
import seed_temperature_app
from conftest import Cluster, start_cluster
from corral_protocol import env as corral_env
from e2e_helpers import client_for


@pytest.fixture(scope="module")
def seed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("seed") / "home", extra_env={corral_env.CORRAL_SIMULATE_GPUS: "A100:4"})
    try:
        created = cluster.corral("secret", "create", "model-api-key", "API_KEY=seed")
        assert created.returncode == 0, created.stderr
        yield cluster
    finally:
        cluster.stop()


def test_the_ephemeral_examples_run_as_written(seed_cluster: Cluster) -> None:
    app = seed_app.app
    with app.run(client=client_for(seed_cluster)):
        assert seed_app.MyModel().predict.remote("x") == "Prediction for: x"

        counter = seed_app.Counter()
        result = counter.increment.remote(5)
        assert result == 6
        assert counter.decrement.remote(5) == 4

        assert seed_app.Model().predict.remote("in") == "model('model.pth',)(in)"
        assert seed_app.DatabaseWorker().query.remote("select 1") == ["select 1"]
        assert seed_app.AsyncService().call_api.remote("/v1") == {"endpoint": "/v1"}

        gpt2 = seed_app.ParameterizedModel(model_name="gpt2", batch_size=16)
        gpt4 = seed_app.ParameterizedModel(model_name="gpt4", batch_size=8)
        result1 = gpt2.predict.remote("Hello")
        result2 = gpt4.predict.remote("World")
        assert (result1, result2) == ("gpt2:Hello:16", "gpt4:World:8")

        stateful = seed_app.StatefulCounter()
        assert [stateful.increment.remote() for _ in range(3)] == [1, 2, 3]

        assert seed_app.FastStartModel().predict.remote("q") == "model('large',)(q)"
        assert seed_app.EfficientModel().predict.remote("q") == "model()(q)"
        assert seed_app.ImageProcessor().resize.remote(b"img", 1, 2) is None
        assert seed_app.ImageProcessor().crop.remote(b"img", 0, 0, 1, 1) is None
        assert seed_app.ImageProcessor().filter.remote(b"img", "blur") is None
        assert seed_app.ConfigurableModel(model_version="v2").describe.remote() == ("v2", "fp16")
        assert seed_app.ResourceManager().ping.remote() is False

        urls = app.running.web_urls if app.running else {}
        with httpx.Client(timeout=60) as http:
            assert http.get(urls["API.health"]).json() == {"status": "healthy"}
            assert http.post(urls["API.process"], json={"a": 1}).json() == {"result": {"a": 1}}


def test_the_float_parameter_example_binds_its_default_and_given_values(seed_cluster: Cluster) -> None:
    with seed_temperature_app.app.run(client=client_for(seed_cluster)):
        Model = seed_temperature_app.Model
        assert Model(model_id="m").settings.remote() == ("m", 0.7)
        assert Model(model_id="m", temperature=1.5).settings.remote() == ("m", 1.5)
        assert Model(model_id="m", temperature=2).settings.remote() == ("m", 2.0)


def test_the_lookup_and_runtime_configuration_examples_run_as_written(seed_cluster: Cluster) -> None:
    deployed = seed_cluster.corral("deploy", seed_app.__file__, "--name", "my-app")
    assert deployed.returncode == 0, deployed.stderr
    client = client_for(seed_cluster)

    Model = modal.Cls.from_name("my-app", "Model", client=client)
    model = Model()
    result = model.predict.remote("input")
    assert result == "model('model.pth',)(input)"

    data = "data"
    # Use a different GPU
    ModelOnH100 = Model.with_options(gpu="H100")

    # Override multiple settings
    CustomModel = Model.with_options(
        gpu="A100",
        memory=16384,
        timeout=1200
    )

    model = CustomModel()
    result = model.predict.remote(data)
    assert result == "model('model.pth',)(data)"
    assert ModelOnH100 is not Model

    ConcurrentModel = Model.with_concurrency(max_inputs=100, target_inputs=80)
    model = ConcurrentModel()
    assert model.predict.remote("c") == "model('model.pth',)(c)"

    BatchedModel = Model.with_batching(max_batch_size=32, wait_ms=100)
    model = BatchedModel()
    assert model is not None  # the seed's `predict` takes one input, not a batch: it is not called

    model = Model()
    # Update autoscaling settings
    model.update_autoscaler(
        min_containers=2,
        max_containers=10,
        buffer_containers=1
    )
    assert model.predict.remote("after") == "model('model.pth',)(after)"


def test_a_deployed_float_parameter_binds_by_value(seed_cluster: Cluster) -> None:
    deployed = seed_cluster.corral("deploy", seed_temperature_app.__file__, "--name", "seed-temp")
    assert deployed.returncode == 0, deployed.stderr
    Model = modal.Cls.from_name("seed-temp", "Model", client=client_for(seed_cluster))
    assert Model(model_id="x", temperature=-0.0).settings.remote() == ("x", 0.0)


def test_a_float_parameter_is_parsed_from_the_gateways_query_string(seed_cluster: Cluster) -> None:
    deployed = seed_cluster.corral("deploy", seed_temperature_app.__file__, "--name", "seed-query")
    assert deployed.returncode == 0, deployed.stderr
    url = f"{seed_cluster.http_url}/v1/apps/seed-query/classes/Model/methods/settings"
    admin = {"authorization": f"Bearer {seed_cluster.token}"}
    with httpx.Client(timeout=120) as http:
        ok = http.post(url, params={"model_id": "q", "temperature": "1.25"}, headers=admin)
        assert ok.status_code == 200, ok.text
        assert ok.json()["value"] == ["q", 1.25]
        default = http.post(url, params={"model_id": "q"}, headers=admin)
        assert default.json()["value"] == ["q", 0.7]
        for bad in ("warm", "nan"):
            refused = http.post(url, params={"model_id": "q", "temperature": bad}, headers=admin)
            assert refused.status_code == 400, refused.text
