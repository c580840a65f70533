"""The seed's second `Model` (a float parameter with a default), as written, with `corral` for `modal`."""

import corral as modal

app = modal.App()


@app.cls()
class Model:
    # Required parameter
    model_id: str = modal.parameter()

    # Optional parameter with default
    temperature: float = modal.parameter(default=0.7)

    # Not in the seed: a method, so that the test can see the parameters arrive.
    @modal.method()
    def settings(self):
        return (self.model_id, self.temperature)
