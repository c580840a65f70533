"""A script that (wrongly) runs its app at import time: containers that import it must fail clearly,
not start clusters of their own."""

import corral

app = corral.App("e2e-module-level-run")


@app.cls(cpu=(0.01, 8))
class Eager:
    @corral.method()
    def f(self) -> int:
        return 1


with app.run():
    try:
        Eager().f.remote()
    except corral.exception.InitError as err:
        print("INIT-ERROR", err)
