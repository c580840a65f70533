"""An app whose image has a failing step: the deploy fails and names it."""

import corral

app = corral.App("images-failing")


@app.cls(image=corral.Image.debian_slim().run_commands("echo corral-image-step-output && exit 3"))
class Broken:
    @corral.method()
    def never(self) -> None:
        pass
