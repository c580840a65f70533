"""A class inside a package, importing a sibling module."""

import corral
from shipped_pkg.helpers import fail_here, shout

app = corral.App("shipped")


@app.cls(scaledown_window=2)
class Shouter:
    @corral.method()
    def shout(self, text: str) -> str:
        return shout(text)

    @corral.method()
    def fail(self, message: str) -> None:
        fail_here(message)

    @corral.method()
    def module_file(self) -> str:
        import shipped_pkg.helpers

        return shipped_pkg.helpers.__file__
