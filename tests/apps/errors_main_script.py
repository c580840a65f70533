"""Run as a script (`python errors_main_script.py`): its exception class lives in `__main__` here."""

import corral

app = corral.App("errors-main-script")


class ErrorsMainError(Exception):
    pass


@app.cls(scaledown_window=2)
class ErrorsMainRaiser:
    @corral.method()
    def fail(self, text: str) -> None:
        raise ErrorsMainError(f"main failure: {text}")

    @corral.method()
    def fail_builtin(self) -> None:
        raise LookupError("main builtin failure")


if __name__ == "__main__":
    with app.run():
        try:
            ErrorsMainRaiser().fail.remote("x")
        except ErrorsMainError as err:
            print("CAUGHT-OWN-TYPE", type(err).__module__, err, type(err.__cause__).__name__)
        except Exception as err:
            print("WRONG-TYPE", type(err).__module__, type(err).__qualname__, err)
        try:
            ErrorsMainRaiser().fail_builtin.remote()
        except LookupError as err:
            print("CAUGHT-BUILTIN", err)
