"""Corral's runtime: the node daemon that runs containers, and the container entrypoint."""
