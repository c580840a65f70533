"""Classes that run in built images: a PyPI package the client lacks, a Debian tool, local files,
environment and working directory from the recipe, and a snapshot class with an image."""

import os
import subprocess
import sys
from pathlib import Path

import corral

app = corral.App("images")

HERE = Path(__file__).resolve().parent
image = (
    corral.Image.debian_slim()
    .apt_install("jq")
    .pip_install("pyfiglet==1.0.2")
    .add_local_dir(HERE / "image_files", "/srv/files")
    .env({"IMAGE_GREETING": "from-the-recipe"})
    .workdir("/srv")
)


@app.cls(image=image, scaledown_window=60)
class InImage:
    @corral.method()
    def figlet_version(self) -> str:
        import pyfiglet  # installed in the image only

        return pyfiglet.__version__

    @corral.method()
    def jq(self, document: str) -> str:
        return subprocess.run(["jq", "-c", ".a"], input=document, capture_output=True, text=True, check=True).stdout.strip()

    @corral.method()
    def local_file(self) -> str:
        return Path("/srv/files/greeting.txt").read_text().strip()

    @corral.method()
    def environment(self) -> dict:
        return {"greeting": os.environ.get("IMAGE_GREETING"), "cwd": os.getcwd(), "python": sys.executable,
                "image_hash": len(os.environ.get("CORRAL_IMAGE_HASH", "")),
                "node_home_visible": Path("/work").exists() or Path("/root").joinpath(".pyenv").exists()}

    @corral.method()
    def greeting_through_with_options(self) -> str:
        """From inside a container, a handle with another image (the node builds what it lacks at
        that container's start: a container's token may not start builds)."""
        image = corral.Image.debian_slim().env({"IMAGE_GREETING": "from-a-container"})
        return corral.Cls.from_name("images", "InImage").with_options(image=image)().environment.remote()["greeting"]



@app.cls(image=corral.Image.debian_slim().pip_install("pyfiglet==1.0.2"), enable_memory_snapshot=True, scaledown_window=60,
         max_containers=3)
class SnapInImage:
    events: str = corral.parameter()

    @corral.enter(snap=True)
    def load(self) -> None:
        import pyfiglet

        self.banner = pyfiglet.figlet_format("hi")
        with open(self.events, "a") as f:
            f.write(f"snap ct={os.environ.get('CORRAL_CONTAINER_ID')}\n")

    @corral.method()
    def describe(self, hold_s: float = 0.0) -> dict:
        import time

        time.sleep(hold_s)
        return {"banner": bool(self.banner.strip()), "container": os.environ["CORRAL_CONTAINER_ID"], "python": sys.executable,
                "pid": os.getpid()}
