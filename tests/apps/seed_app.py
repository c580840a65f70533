"""Every example of the seed document (../shared/seed/), as written, with `corral` for `modal`.

Only the user's own helpers get stand-ins (`load_model`, `torch.load`, `connect_to_database`,
`create_async_client`, `load_large_model`, `acquire_expensive_resource`); they are defined below
the examples' imports, as a user's module would define or import them. The seed names two
classes `Model`; the one with the float parameter is in seed_temperature_app.py, since one app
holds one class of a name.
"""

import sys
import types

import corral as modal  # the only change the examples get: `corral` for `modal`

# -- stand-ins for the user's own helpers -------------------------------------------------------


class _StandInModel:
    def __init__(self, *args):
        self.args = args

    def eval(self):
        return self

    def __call__(self, input):
        return f"model{self.args}({input})"

    def predict(self, input, batch_size=1):
        return f"{self.args[0] if self.args else 'model'}:{input}:{batch_size}"


def load_model(*args):
    return _StandInModel(*args)


def load_large_model():
    return _StandInModel("large")


class _Db:
    closed = False

    def execute(self, sql):
        return [sql]

    def close(self):
        self.closed = True


def connect_to_database():
    return _Db()


class _AsyncClient:
    async def get(self, endpoint):
        return {"endpoint": endpoint}


async def create_async_client():
    return _AsyncClient()


def acquire_expensive_resource():
    return _Db()


# `import torch` inside a container finds this stand-in (torch is the user's dependency, not ours).
sys.modules.setdefault("torch", types.SimpleNamespace(load=lambda path: _StandInModel(path)))


# -- the seed's examples ------------------------------------------------------------------------

app = modal.App()


@app.cls()
class MyModel:
    @modal.method()
    def predict(self, input: str):
        return f"Prediction for: {input}"


@app.cls(
    image=modal.Image.debian_slim().pip_install("torch"),
    gpu="A100",
    secrets=[modal.Secret.from_name("model-api-key")],
    timeout=600
)
class GPUModel:
    @modal.method()
    def inference(self, data):
        pass


@app.cls()
class Counter:
    @modal.method()
    def increment(self, value: int):
        return value + 1

    @modal.method()
    def decrement(self, value: int):
        return value - 1


@app.cls(gpu="A100")
class Model:
    @modal.enter()
    def load_model(self):
        import torch
        # Load the model once when container starts
        self.model = torch.load("model.pth")
        self.model.eval()

    @modal.method()
    def predict(self, input):
        # Reuse the loaded model
        return self.model(input)


@app.cls()
class DatabaseWorker:
    @modal.enter()
    def connect(self):
        self.db = connect_to_database()

    @modal.exit()
    def disconnect(self):
        self.db.close()

    @modal.method()
    def query(self, sql: str):
        return self.db.execute(sql)


@app.cls()
class AsyncService:
    @modal.enter()
    async def setup(self):
        self.client = await create_async_client()

    @modal.method()
    async def call_api(self, endpoint: str):
        return await self.client.get(endpoint)


@app.cls()
class ParameterizedModel:
    model_name: str = modal.parameter()
    batch_size: int = modal.parameter(default=32)

    @modal.enter()
    def load_model(self):
        print(f"Loading {self.model_name} with batch size {self.batch_size}")
        self.model = load_model(self.model_name)

    @modal.method()
    def predict(self, input):
        return self.model.predict(input, batch_size=self.batch_size)


@app.cls()
class StatefulCounter:
    @modal.enter()
    def initialize(self):
        self.count = 0

    @modal.method()
    def increment(self):
        self.count += 1
        return self.count


@app.cls()
class API:
    @modal.method()
    @modal.web_endpoint()
    def health(self):
        return {"status": "healthy"}

    @modal.method()
    @modal.web_endpoint(method="POST")
    def process(self, data: dict):
        return {"result": data}


@app.cls(enable_memory_snapshot=True)
class FastStartModel:
    @modal.enter(snap=True)
    def load_model(self):
        # This runs once and is checkpointed
        self.model = load_large_model()

    @modal.method()
    def predict(self, input):
        return self.model(input)


@app.cls(gpu="A100")
class EfficientModel:
    @modal.enter()
    def load(self):
        # Expensive: runs once per container
        self.model = load_model()

    @modal.method()
    def predict(self, input):
        # Fast: reuses loaded model
        return self.model(input)


@app.cls()
class ImageProcessor:
    @modal.method()
    def resize(self, image, width, height):
        pass

    @modal.method()
    def crop(self, image, x, y, w, h):
        pass

    @modal.method()
    def filter(self, image, filter_type):
        pass


@app.cls()
class ConfigurableModel:
    model_version: str = modal.parameter()
    precision: str = modal.parameter(default="fp16")

    @modal.enter()
    def load_model(self):
        self.model = load_model(self.model_version, self.precision)

    # Not in the seed: a method, so that the test can call it.
    @modal.method()
    def describe(self):
        return self.model.args


@app.cls()
class ResourceManager:
    @modal.enter()
    def acquire_resources(self):
        self.resource = acquire_expensive_resource()

    @modal.exit()
    def release_resources(self):
        self.resource.close()

    # Not in the seed: a method, so that a container starts and its hooks run.
    @modal.method()
    def ping(self):
        return self.resource.closed
